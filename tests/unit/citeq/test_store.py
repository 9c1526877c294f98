"""The DynamoDB store on mock_aws with the template's own table."""

from __future__ import annotations

import time
from dataclasses import fields, replace

import pytest

from citeq import intake
from citeq.errors import ItemTooLarge
from citeq.models import ChatRequest, Request, RequestRecord
from citeq.store import COMPRESS_ABOVE, Store


@pytest.fixture
def store(aws: dict[str, str]) -> Store:
    return Store(aws["ResultsTable"])


def _queued(store: Store, n: int, batch_id: str = "b1") -> None:
    store.create_batch(batch_id, n, source="in.jsonl", idempotency_key=None)
    for seq in range(1, n + 1):
        store.put_request(
            Request(
                f"{batch_id}-{seq}",
                ChatRequest.ask(f"q{seq}", "a"),
                batch_id=batch_id,
                seq=seq,
                custom_id=f"c{seq}",
            )
        )


def _claim(store: Store, request_id: str, lease_for: float = 60.0) -> RequestRecord | None:
    """Claim a stored request for an attempt whose lease lasts ``lease_for`` seconds (negative: already over)."""
    item = store.get(request_id)
    assert item is not None
    return store.claim(item, lease_until=time.time() + lease_for)


def test_counters_move_with_each_status_change_and_sum_to_total(store: Store) -> None:
    _queued(store, 3)
    first = _claim(store, "b1-1")
    assert first is not None and first.status == "running" and first.attempts == 1
    assert store.succeed(first, {"id": "x", "message": {"content": "A"}}, 12)
    second = _claim(store, "b1-2")
    assert second is not None and store.fail(second, {"type": "BadRequestError", "message": "no"})
    assert store.cancel(store.get("b1-3"))  # type: ignore[arg-type]
    info = store.get_batch("b1")
    assert info is not None and info.done
    assert info.counts == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 1}


def test_an_older_attempt_never_overwrites_a_newer_one(store: Store) -> None:
    _queued(store, 1)
    old = _claim(store, "b1-1", lease_for=-1)  # an attempt whose lease has ended (it died, or is late)
    assert old is not None
    assert _claim(store, "b1-1") is None  # running: not claimable as queued
    new = store.take_over(store.get("b1-1"), lease_until=time.time() + 60)  # type: ignore[arg-type]
    assert new is not None and (new.attempts, new.failures) == (2, 1)
    assert store.succeed(new, {"answer": "new"}, 5)
    assert not store.succeed(old, {"answer": "old"}, 9)
    assert not store.fail(old, {"type": "X", "message": "late"})
    item = store.get("b1-1")
    assert item is not None and item.answer == {"answer": "new"} and item.latency_ms == 5
    assert store.get_batch("b1").counts["succeeded"] == 1  # type: ignore[union-attr]


def test_ended_requests_cannot_start_again(store: Store) -> None:
    _queued(store, 1)
    running = _claim(store, "b1-1")
    assert running is not None and store.succeed(running, {"a": 1}, 1)
    assert _claim(store, "b1-1") is None
    assert store.take_over(store.get("b1-1"), lease_until=time.time() + 60) is None  # type: ignore[arg-type]


def test_requeue_then_reset_bumps_the_generation(store: Store) -> None:
    _queued(store, 1)
    running = _claim(store, "b1-1")
    assert running is not None and store.requeue(running, {"type": "RateLimitError", "message": "slow"})
    again = _claim(store, "b1-1")
    assert again is not None and store.fail(again, {"type": "X", "message": "no"})
    failed = store.get("b1-1")
    reset = store.reset(failed)  # type: ignore[arg-type]
    assert reset is not None and reset.generation == 1 and reset.status == "queued"
    assert failed is not None and reset.dispatch != failed.dispatch  # a new message is owed
    assert store.get_batch("b1").counts["queued"] == 1  # type: ignore[union-attr]


def test_large_answers_are_compressed_and_too_large_ones_fail_clearly(store: Store) -> None:
    _queued(store, 2)
    running = _claim(store, "b1-1")
    assert running is not None
    big = {"message": {"content": "cited text " * (COMPRESS_ABOVE // 5)}}
    assert store.succeed(running, big, 1)
    assert store.get("b1-1").answer == big  # type: ignore[union-attr]
    other = _claim(store, "b1-2")
    assert other is not None
    import os

    random_text = os.urandom(600_000).hex()  # incompressible and far beyond 400 KB
    with pytest.raises(ItemTooLarge, match="more than the"):
        store.succeed(other, {"message": {"content": random_text}}, 1)


def test_pages_come_back_in_input_order(store: Store) -> None:
    _queued(store, 25)
    page, start = store.page("b1", limit=10)
    assert [i.seq for i in page] == list(range(1, 11)) and start is not None
    assert [i.custom_id for i in store.iter_batch("b1", page_size=7)] == [f"c{n}" for n in range(1, 26)]


def test_idempotency_key_binds_once(store: Store) -> None:
    assert store.claim_idempotency_key("k", "b-first") == "b-first"
    assert store.claim_idempotency_key("k", "b-second") == "b-first"


def test_put_requests_skips_existing_items(store: Store) -> None:
    _queued(store, 2)
    running = _claim(store, "b1-1")
    assert running is not None and store.succeed(running, {"a": 1}, 1)
    store.put_requests(
        [
            Request("b1-1", ChatRequest.ask("q", "a"), batch_id="b1", seq=1),
            Request("b1-9", ChatRequest.ask("q", "a"), batch_id="b1", seq=9),
        ]
    )
    assert store.get("b1-1").status == "succeeded"  # type: ignore[union-attr]
    assert store.get("b1-9").status == "queued"  # type: ignore[union-attr]


def test_deliveries_are_appended(store: Store) -> None:
    _queued(store, 1)
    store.record_delivery("b1-1", {"attempt": 1, "status": 500})
    store.record_delivery("b1-1", {"attempt": 2, "status": 200})
    assert [d["status"] for d in store.get("b1-1").deliveries] == [500, 200]  # type: ignore[union-attr]


def _conflict() -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
        },
        "TransactWriteItems",
    )


class _ConflictingClient:
    """DynamoDB as it behaves under contention (moto never produces TransactionConflict)."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls = 0

    def transact_write_items(self, **kwargs: object) -> dict[str, object]:
        self.calls += 1
        if self.calls <= self.conflicts:
            raise _conflict()
        return {}


def test_transaction_conflicts_are_retried_then_reported() -> None:
    from citeq.errors import StoreError

    waits: list[float] = []
    item = RequestRecord("r", ChatRequest.ask("q", "a"), batch_id="b")
    recovering = _ConflictingClient(conflicts=2)
    assert Store("t", client=recovering, sleep=waits.append).cancel(item) is True
    assert recovering.calls == 3 and len(waits) == 2
    stuck = _ConflictingClient(conflicts=100)
    with pytest.raises(StoreError, match="TransactionCanceledException"):
        Store("t", client=stuck, sleep=waits.append).cancel(item)
    assert stuck.calls == 6


@pytest.mark.parametrize("metadata", [{}, {"team": "ops", "n": 10**30, "none": None}, None])
def test_put_request_every_field_reads_back_unchanged(store: Store, metadata: dict[str, object] | None) -> None:
    line = {
        "custom_id": " q-1 ",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        "model": "gpt-4o",
        "temperature": 1,
        "filter": {"kind": {"$in": ["manual", 2.5]}},
        "context_options": {"top_k": 4, "multimodal": False},
        "metadata": metadata,
        "callback_url": "https://hooks.example.com/cb",
    }
    request = replace(intake.validate(line, "main"), request_id="r-rt", batch_id="b-rt", seq=7, caller="key:0123")
    assert store.put_request(request)
    record = store.get("r-rt")
    assert record is not None
    assert {f.name: getattr(record, f.name) for f in fields(Request)} == request.__dict__


def test_put_request_stores_its_input_in_the_bytes_input_bytes_counts(store: Store) -> None:
    # The answer gets what input_bytes leaves of the item; stored \u-escaped, CJK text took twice that (moto does
    # not hold items to 400 KB, so the sizes are compared here).
    request = intake.validate(
        {"messages": [{"role": "user", "content": "質問" * 1_000}], "metadata": {"備考": "漢字" * 20_000}}, "main"
    )
    request = replace(request, request_id="r-utf8")
    assert store.put_request(request)
    raw = store.client.get_item(TableName=store.table, Key={"pk": {"S": "REQ#r-utf8"}, "sk": {"S": "REQ"}})["Item"]
    stored = sum(len(raw[name]["S"].encode()) for name in ("messages", "options", "metadata"))
    assert stored <= request.input_bytes()
    record = store.get("r-utf8")
    assert record is not None and record.metadata == request.metadata and record.chat == request.chat
