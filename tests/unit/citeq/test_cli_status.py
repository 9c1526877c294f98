"""``citeq batch status`` against a paced table (moto in process): what it reads and what it prints."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest

from citeq.budget import TokenBudget
from citeq.cli import Factory, main
from citeq.config import Settings
from citeq.models import ChatRequest, Request
from citeq.store import Store

NOW = 1_800_000_000.0


class Clocked(Factory):
    """A factory whose clock stands still at ``NOW``."""

    def clock(self) -> float:
        return NOW


def _batch(store: Store, n: int, batch_id: str = "b1", assistant: str = "help") -> None:
    store.create_batch(batch_id, n, source="questions.jsonl", idempotency_key=None)
    store.mark_batch_submitted(batch_id)
    for seq in range(1, n + 1):
        store.put_request(
            Request(
                f"{batch_id}-{seq}",
                ChatRequest.ask(f"q{seq}", assistant),
                batch_id=batch_id,
                seq=seq,
                custom_id=f"c{seq}",
            )
        )


def _defer(store: Store, request_id: str, until: float, reason: str) -> None:
    item = store.get(request_id)
    assert item is not None and store.defer(item, until, reason) is not None


def _cancel(store: Store, *request_ids: str) -> None:
    for request_id in request_ids:
        item = store.get(request_id)
        assert item is not None and store.cancel(item)


def _status(aws: dict[str, str], *args: str, **env: str) -> tuple[int, str]:
    settings = Settings.from_env({"CITEQ_TABLE": aws["ResultsTable"], "CITEQ_QUEUE_URL": aws["RequestsQueue"], **env})
    out, err = io.StringIO(), io.StringIO()
    code = main(["batch", "status", "b1", *args], factory=Clocked(settings), out=out, err=err)
    assert err.getvalue() == ""
    return code, out.getvalue()


@pytest.fixture
def store(aws: dict[str, str]) -> Store:
    return Store(aws["ResultsTable"])


def _spend(store: Store, limit: int, calls: list[tuple[float, int]]) -> None:
    """Calls made at (seconds before NOW, prompt tokens), through the budget the workers use."""
    for n, (ago, tokens) in enumerate(calls):
        budget = TokenBudget(store, limit, wall=lambda ago=ago: NOW - ago, rng=random.Random(n))
        assert budget.acquire("help", f"call-{n}").wait_until is None
        budget.settle("help", f"call-{n}", tokens)


def test_status_of_a_paced_batch_shows_deferred_requests_budget_and_eta(store: Store, aws: dict[str, str]) -> None:
    _batch(store, 12)
    _cancel(store, "b1-1", "b1-2")
    for seq in range(3, 8):
        _defer(store, f"b1-{seq}", NOW + 30, "waiting for token budget (19,400 input tokens/min)")
    _defer(store, "b1-8", NOW + 40, "rate limited (429): pacing cut to 9,700 input tokens/min")
    _spend(store, 20_000, [(50.0, 9_000), (20.0, 7_000)])  # spaced as the budget spreads calls

    code, text = _status(aws, CITEQ_TOKENS_PER_MINUTE="20000")
    lines = text.splitlines()
    assert code == 0
    assert lines[2] == "deferred 6 (waiting for token budget 5, rate limited (429) 1)"
    assert lines[3].startswith("budget help: 16,000 of 20,000 input tokens/min used, pacing at 19,400")
    assert "~8,000 tokens a call (mean of 2 calls)" in lines[3]
    # 10 remaining x 8,000 tokens / 19,400 a minute = 247 s.
    assert lines[4].endswith("ETA 4m07s from the token budget")

    _, text = _status(aws, "--json", CITEQ_TOKENS_PER_MINUTE="20000")
    body = json.loads(text)
    assert body["pacing"]["deferred"] == 6 and body["eta_basis"] == "budget"
    assert body["pacing"]["assistants"][0]["remaining"] == 10
    assert body["pacing"]["assistants"][0]["used_tokens"] == 16_000


def test_status_reads_the_limit_the_workers_wrote(store: Store, aws: dict[str, str]) -> None:
    _batch(store, 3)
    _spend(store, 30_000, [(10.0, 5_000)])
    _, text = _status(aws, "--json", CITEQ_TOKENS_PER_MINUTE="starter")
    assert json.loads(text)["pacing"]["assistants"][0]["limit_tokens"] == 30_000


def test_status_without_pacing_reads_no_budget_and_no_requests(store: Store, aws: dict[str, str]) -> None:
    _batch(store, 3)
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    settings = Settings.from_env({"CITEQ_TABLE": aws["ResultsTable"], "CITEQ_QUEUE_URL": aws["RequestsQueue"]})
    factory: Any = Clocked(settings)
    factory.store = lambda: store
    out = io.StringIO()
    assert main(["batch", "status", "b1", "--json"], factory=factory, out=out) == 0
    assert "pacing" not in json.loads(out.getvalue())
    assert calls == ["GetItem"]


def test_unfinished_reads_the_batch_from_its_end_and_stops_when_all_are_seen(store: Store) -> None:
    _batch(store, 30)
    _cancel(store, *(f"b1-{seq}" for seq in range(1, 26)))
    queries: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.Query", lambda model, **_: queries.append(model.name))
    found = store.unfinished("b1", expected=5, page_size=8)
    assert [u.status for u in found] == ["queued"] * 5 and {u.assistant for u in found} == {"help"}
    assert len(queries) == 1  # the last 8 of 30 held all five


def test_unfinished_reads_on_while_some_are_still_unseen(store: Store) -> None:
    _batch(store, 30)
    _cancel(store, *(f"b1-{seq}" for seq in range(6, 31)))
    queries: list[str] = []
    store.client.meta.events.register("before-call.dynamodb.Query", lambda model, **_: queries.append(model.name))
    assert len(store.unfinished("b1", expected=5, page_size=8)) == 5
    assert len(queries) == 4  # 30 items in pages of 8, the first five only in the last page
    assert store.unfinished("b1", expected=0) == []
