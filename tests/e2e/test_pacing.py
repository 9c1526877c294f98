"""Pacing to the plan's token limit on the whole local stack (issue 10's proof).

The emulator enforces a limit of 100k input tokens per 30-second window (the service counts a minute; a
shorter window on both sides keeps the test to minutes), answers in about 1.5 s, and prompts cost 4k-6k tokens.
These tests assert what must hold whatever the machine's speed (nothing fails, waiting never spends an
attempt, batches share the budget, a wrong rate and a quota recover) and print the throughput and 429 share;
the numeric targets (>= 85% of the limit, < 5% / < 15% 429s) are asserted on the budget itself with time
injected (``tests/unit/citeq/test_budget.py``) and measured by ``tests/bench/test_pacing_bench.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime

import boto3
import pytest

from citeq import batch
from citeq.models import RequestRecord
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import Admin

LIMIT = 100_000
WINDOW = 30.0
ASSISTANT = "citeq-demo"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        tokens_per_minute=LIMIT,
        context_tokens=(4_000, 6_000),
        latency="realistic",
        worker_env={"CITEQ_TOKEN_WINDOW_SECONDS": str(int(WINDOW)), "CITEQ_QUOTA_PROBE_SECONDS": "5"},
        reconcile_every=3600,
    ) as local:
        yield local


@pytest.fixture
def emu(stack: LocalStack) -> Iterator[Admin]:
    """The emulator with a fresh window and usage, the test's window length, and a fresh token budget."""
    assert stack.emulator is not None
    admin = Admin(stack.emulator.url)
    admin.reset()
    admin.plan(window_seconds=WINDOW)
    boto3.client("dynamodb").delete_item(
        TableName=stack.table, Key={"pk": {"S": f"BUDGET#{ASSISTANT}"}, "sk": {"S": "BUDGET"}}
    )
    stack.use_pacing(LIMIT)
    yield admin
    admin.reset()


def submit(store: Store, prefix: str, count: int) -> str:
    # Each question is different, so each draws its own prompt size.
    text = "\n".join(
        json.dumps({"custom_id": f"{prefix}-{n}", "question": f"What is the refund policy for order {prefix}{n}?"})
        for n in range(count)
    )
    return batch.submit(batch.parse(text, fmt="jsonl", default_assistant=ASSISTANT), store=store).batch_id


def wait_done(store: Store, batch_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(info is not None and info.done for info in map(store.get_batch, batch_ids)):
        if time.monotonic() > deadline:
            raise AssertionError(f"batches not done after {timeout:.0f}s: {[store.get_batch(b) for b in batch_ids]}")
        time.sleep(0.5)


def calls(items: list[RequestRecord]) -> list[tuple[float, int]]:
    """(start, prompt tokens) of each answered request's call, in time order."""
    started = []
    for item in items:
        if item.answer is not None:
            at = datetime.fromisoformat(str(item.started_at).replace("Z", "+00:00")).timestamp()
            started.append((at, int(item.answer["usage"]["prompt_tokens"])))
    return sorted(started)


def rate_share(started: list[tuple[float, int]]) -> float:
    """Tokens per window achieved between the first call's start and the last one's, as a share of the limit."""
    span = started[-1][0] - started[0][0]
    return sum(n for _, n in started[:-1]) / (LIMIT * span / WINDOW)


def figures(admin: Admin) -> tuple[int, int]:
    usage = admin.plan()["usage"]
    return int(usage["requests"]), int(usage["rejected_429"])


def test_two_batches_five_windows_of_budget_share_it_and_finish_without_failures(
    stack: LocalStack, emu: Admin
) -> None:
    store = Store(stack.table)
    first, second = submit(store, "a", 60), submit(store, "b", 35)  # ~500k tokens: five windows' budget
    wait_done(store, [first, second], timeout=400)
    items = {b: list(store.iter_batch(b)) for b in (first, second)}
    every = items[first] + items[second]
    assert {i.status for i in every} == {"succeeded"}
    # Waiting never counted as an attempt: each request was called once, however often it was put off.
    assert {i.attempts for i in every} == {1} and sum(i.deferrals for i in every) > 0
    accepted, refused = figures(emu)
    started = calls(every)
    share = rate_share(started)
    print(f"\n[pacing] 95 requests, {accepted} calls, {refused} 429s ({refused / (accepted + refused):.1%}), "
          f"{share:.0%} of {LIMIT:,} tokens per {WINDOW:g} s")
    assert accepted == 95  # every question answered by exactly one accepted call
    # Both batches drew from the one budget at the same time: their calls interleave.
    a, b = calls(items[first]), calls(items[second])
    assert a[0][0] < b[-1][0] and b[0][0] < a[-1][0]


def test_a_rate_configured_three_times_too_high_converges(stack: LocalStack, emu: Admin) -> None:
    stack.use_pacing(3 * LIMIT)
    store = Store(stack.table)
    batch_id = submit(store, "c", 60)  # ~300k tokens: three windows' real budget
    wait_done(store, [batch_id], timeout=400)
    items = list(store.iter_batch(batch_id))
    assert {i.status for i in items} == {"succeeded"} and {i.attempts for i in items} == {1}
    accepted, refused = figures(emu)
    print(f"\n[pacing] configured 3x the limit: {accepted} calls, {refused} 429s "
          f"({refused / (accepted + refused):.1%})")
    assert accepted == 60 and refused > 0  # the wrong rate met the limit, and still nothing failed


def test_a_quota_answer_pauses_the_assistant_and_work_resumes_when_it_is_lifted(
    stack: LocalStack, emu: Admin
) -> None:
    store = Store(stack.table)
    emu.plan(quota_input_tokens=30_000)  # a few calls, then 403 for the project
    batch_id = submit(store, "q", 12)

    def paused() -> list[RequestRecord]:
        return [i for i in store.iter_batch(batch_id) if i.status == "queued" and "paused" in (i.wait_reason or "")]

    deadline = time.monotonic() + 120
    while not paused():
        assert time.monotonic() < deadline, "no request was paused"
        time.sleep(0.5)
    waiting = paused()[0]
    assert "quota" in (waiting.wait_reason or "") and waiting.not_before is not None
    assert store.get_batch(batch_id).counts["failed"] == 0  # type: ignore[union-attr]
    assert emu.plan()["usage"]["rejected_403"] >= 1
    emu.plan(quota_input_tokens=0)  # the quota is lifted (0: unlimited)
    wait_done(store, [batch_id], timeout=300)
    items = list(store.iter_batch(batch_id))
    assert {i.status for i in items} == {"succeeded"} and {i.attempts for i in items} == {1}
