"""``citeq batch status`` on the whole local stack with a tiny token limit (issue 10): the deferred requests
and the budget line, read through the real CLI while the workers pace the batch.

Its own package: this stack is paced, the ``tests/e2e`` one is not, and two stacks must not run at once
(each points the process's environment at itself)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citeq.cli import EXIT_OK, Factory, main
from citeq.config import Settings
from infra.local import LocalStack
from tests.helpers import ASSISTANT, Admin

# About three calls of ~1.5k prompt tokens a 6-second window: a batch of 24 must wait for the budget.
LIMIT = 6_000
WINDOW = 6.0
QUESTIONS = 24


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        tokens_per_minute=LIMIT,
        context_tokens=(1_000, 1_500),
        latency="none",
        worker_env={"CITEQ_TOKEN_WINDOW_SECONDS": str(WINDOW)},
        reconcile_every=3600,
    ) as local:
        assert local.emulator is not None
        Admin(local.emulator.url).plan(window_seconds=WINDOW)
        yield local


def _cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), factory=Factory(Settings.from_env()), out=out, err=err)
    assert err.getvalue() == "", err.getvalue()
    return code, out.getvalue()


def test_batch_status_shows_deferred_requests_and_the_budget(stack: LocalStack, tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"custom_id": f"q{n}", "question": f"How long does a bulk export link stay valid? ({n})"})
            for n in range(QUESTIONS)
        )
    )
    code, text = _cli("batch", "submit", str(questions))
    assert code == EXIT_OK
    batch_id = text.split()[0]

    # Poll until the budget has learnt real prompt sizes and requests are waiting for it.
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, text = _cli("batch", "status", batch_id, "--json")
        seen = json.loads(text)
        pacing = seen.get("pacing") or {}
        budget = (pacing.get("assistants") or [{}])[0]
        if pacing.get("deferred", 0) >= 3 and budget.get("samples", 0) > 0 and budget.get("used_tokens", 0) > 0:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no deferred requests seen in batch status: {seen}")
    assert code == EXIT_OK
    assert seen["eta_basis"] == "budget" and seen["eta_s"] > 0
    assert budget["assistant"] == ASSISTANT
    assert (budget["limit_tokens"], budget["window_s"]) == (LIMIT, WINDOW)
    assert 1_000 < budget["estimate_tokens"] < 3_000  # learnt from the emulator's real prompt_tokens
    assert {r["reason"] for r in pacing["wait_reasons"]} <= {"waiting for token budget", "rate limited (429)"}

    code, text = _cli("batch", "status", batch_id)
    print(f"\n{text}")  # shown with -s: what an operator reads
    lines = text.splitlines()
    assert code == EXIT_OK
    assert any(line.startswith("deferred ") for line in lines), text
    assert any(
        line.startswith(f"budget {ASSISTANT}: ") and f"of {LIMIT:,} input tokens per 6 s window used" in line
        for line in lines
    ), text
    assert "from the token budget" in lines[-1]

    # Waiting is not failing: what is cancelled now was queued, never failed.
    _cli("batch", "cancel", batch_id)
    code, text = _cli("batch", "status", batch_id, "--json")
    assert json.loads(text)["counts"]["failed"] == 0
