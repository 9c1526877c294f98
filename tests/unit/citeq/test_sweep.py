"""``citeq.sweep`` against moto in process (the ``aws`` fixture, with template.yaml's table and its sparse
``open`` index): which requests it calls stranded, what it writes for each, and when it does not look at all."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from citeq import dlq, sweep
from citeq.config import Settings
from citeq.messages import encode
from citeq.models import ChatRequest, Request, RequestRecord
from citeq.queue import Queue
from citeq.store import OPEN_SHARDS, Store, open_shard
from infra.local.template import load
from tests.helpers import Clock

MAX_RECEIVES = 6
AFTER = 1800.0
T0 = 1_800_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(aws: dict[str, str], clock: Clock) -> Store:
    return Store(aws["ResultsTable"], clock=clock)


@pytest.fixture
def queue(aws: dict[str, str]) -> Queue:
    return Queue(aws["RequestsQueue"], dlq_url=aws["RequestsDeadLetterQueue"])


def _put(store: Store, request_id: str, batch: str | None = None, seq: int | None = None) -> RequestRecord:
    store.put_request(Request(request_id, ChatRequest.ask("q", "a"), batch_id=batch, seq=seq), dispatch="tok")
    item = store.get(request_id)
    assert item is not None
    return item


def _sweep(store: Store, queue: Queue, clock: Clock) -> sweep.Swept:
    return sweep.sweep(store=store, queue=queue, max_receives=MAX_RECEIVES, stranded_after=AFTER, wall=clock)


def _raw(aws: dict[str, str], request_id: str) -> dict[str, Any]:
    item = boto3.client("dynamodb").get_item(
        TableName=aws["ResultsTable"], Key={"pk": {"S": f"REQ#{request_id}"}, "sk": {"S": "REQ"}}
    )["Item"]
    return dict(item)


def test_the_open_index_lists_a_request_exactly_while_it_is_not_ended(
    store: Store, aws: dict[str, str], clock: Clock
) -> None:
    queued = _put(store, "r-open")
    assert store.open_request_ids() == ["r-open"]
    assert _raw(aws, "r-open")["open_shard"] == {"S": open_shard("r-open")} and open_shard("r-open") in OPEN_SHARDS
    running = store.claim(queued, T0 + 60)
    assert running is not None and store.open_request_ids() == ["r-open"]
    assert store.succeed(running, {"message": {"role": "assistant", "content": "x"}, "citations": []}, 5)
    assert store.open_request_ids() == [] and "open_shard" not in _raw(aws, "r-open")
    # Failed, then reset for another try: listed again; cancelled: gone.
    failed = _put(store, "r-reset")
    assert store.fail(failed, {"type": "X", "message": "no"})
    assert store.open_request_ids() == []
    assert store.reset(store.get("r-reset")) is not None  # type: ignore[arg-type]
    assert store.open_request_ids() == ["r-reset"]
    assert store.cancel(store.get("r-reset"))  # type: ignore[arg-type]
    assert store.open_request_ids() == []
    # A request stored already failed (a malformed message kept with its reason) is never listed.
    store.put_failed(Request("r-bad", ChatRequest.ask("q", "a")), {"type": "Malformed", "message": "x"})
    assert store.open_request_ids() == []


def test_the_open_index_spreads_requests_over_its_shards(store: Store) -> None:
    shards = {open_shard(f"req-{n}") for n in range(200)}
    assert shards == set(OPEN_SHARDS)


def test_a_queued_request_still_past_the_limit_gets_a_new_message_and_nothing_else_does(
    store: Store, queue: Queue, clock: Clock, aws: dict[str, str]
) -> None:
    _put(store, "r-lost", batch="b1", seq=0)
    store.create_batch("b1", 1, source=None, idempotency_key=None)
    deferred = _put(store, "r-waiting")
    assert store.defer(deferred, T0 + 3000, "token budget") is not None  # due long after the cutoff
    clock.now = T0 + 600
    _put(store, "r-recent")
    clock.now = T0 + AFTER + 1
    swept = _sweep(store, queue, clock)
    assert (swept.skipped, swept.examined, swept.redispatched, swept.failed) == (None, 3, ["r-lost"], [])
    lost = store.get("r-lost")
    assert lost is not None and lost.status == "queued" and lost.dispatch not in (None, "tok")
    assert _raw(aws, "r-lost")["redispatches"] == {"N": "1"}
    # The counters did not move (queued -> queued), and the others are as they were.
    assert store.get_batch("b1").counts["queued"] == 1  # type: ignore[union-attr]
    assert store.get("r-recent").dispatch == "tok"  # type: ignore[union-attr]
    assert "redispatches" not in _raw(aws, "r-waiting")
    # Just sent a new message: not stranded again until it has been still for as long once more.
    clock.now += AFTER - 1
    assert _sweep(store, queue, clock).redispatched == ["r-recent"]


def test_a_running_request_past_its_lease_counts_a_failure_and_the_last_one_fails_it(
    store: Store, queue: Queue, clock: Clock
) -> None:
    running = store.claim(_put(store, "r-died"), T0 + 120)
    assert running is not None
    live = store.claim(_put(store, "r-live"), T0 + 5000)
    assert live is not None
    clock.now = T0 + 120 + AFTER + 1
    assert _sweep(store, queue, clock).redispatched == ["r-died"]
    died = store.get("r-died")
    assert died is not None and died.status == "queued" and died.failures == 1 and died.lease is None
    assert died.error is not None and "message was lost" in died.error["message"]
    assert store.get("r-live").status == "running"  # type: ignore[union-attr]
    # One that has used its attempts is failed with the reason instead.
    last = store.claim(_put(store, "r-last"), clock.now + 10)
    assert last is not None
    # As if five attempts had died already (takeovers count them so).
    boto3.client("dynamodb").update_item(
        TableName=store.table,
        Key={"pk": {"S": "REQ#r-last"}, "sk": {"S": "REQ"}},
        UpdateExpression="SET failures = :f",
        ExpressionAttributeValues={":f": {"N": str(MAX_RECEIVES - 1)}},
    )
    clock.now += 10 + AFTER + 1
    swept = _sweep(store, queue, clock)
    assert swept.failed == ["r-last"]
    failed = store.get("r-last")
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and failed.error["message"].startswith(f"gave up after {MAX_RECEIVES} failed")


def test_it_does_not_look_while_the_queue_has_visible_messages(store: Store, queue: Queue, clock: Clock) -> None:
    _put(store, "r-lost")
    queue.send([("someone-else", "{}")])
    clock.now = T0 + AFTER + 1
    swept = _sweep(store, queue, clock)
    assert swept.skipped is not None and "visible" in swept.skipped and swept.examined == 0
    assert store.get("r-lost").dispatch == "tok"  # type: ignore[union-attr]


def test_a_request_that_moved_on_after_the_read_is_left_to_whoever_moved_it(
    store: Store, queue: Queue, clock: Clock
) -> None:
    stale = _put(store, "r-moved")
    assert store.claim(stale, T0 + AFTER + 100) is not None  # its message arrived after all
    clock.now = T0 + AFTER + 1
    assert not store.redispatch(stale, lease_ended_before=clock.now - AFTER, error=sweep.DIED)
    assert store.get("r-moved").status == "running"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- edges a review found
def test_a_message_that_keeps_dying_reaches_the_dlq_before_the_sweep_would_call_its_request_stranded(
    store: Store, queue: Queue, clock: Clock, aws: dict[str, str]
) -> None:
    # Deliveries that end without a write (the invocation crashes, times out or is throttled before the claim)
    # leave the item unchanged while its message cycles in flight, a visibility timeout per receive. With the
    # default wait the DLQ and the reconciler end the request first, with its reason: the sweep never resets
    # the receive count with a new message.
    template = load()["Resources"]["RequestsQueue"]["Properties"]
    road_to_dlq = int(template["VisibilityTimeout"]) * int(template["RedrivePolicy"]["maxReceiveCount"])
    assert road_to_dlq + 120 < sweep.STRANDED_AFTER  # and the reconciler's minute, twice
    assert Settings().stranded_after_seconds == sweep.STRANDED_AFTER  # the default the function runs with
    item = _put(store, "r-poison")
    clock.now = T0 + road_to_dlq + 60
    assert sweep.sweep(store=store, queue=queue, max_receives=MAX_RECEIVES, wall=clock).redispatched == []
    boto3.client("sqs").send_message(QueueUrl=aws["RequestsDeadLetterQueue"], MessageBody=encode(item))
    assert dlq.reconcile(store=store, queue=queue, max_receives=MAX_RECEIVES, now=clock.now) == 1
    assert store.get("r-poison").status == "failed"  # type: ignore[union-attr]
    clock.now = T0 + sweep.STRANDED_AFTER + 1
    assert sweep.sweep(store=store, queue=queue, max_receives=MAX_RECEIVES, wall=clock).examined == 0


def test_a_request_stored_before_the_index_is_listed_from_its_next_change(
    store: Store, queue: Queue, clock: Clock, aws: dict[str, str]
) -> None:
    # Items written by the previous release have no open_shard: any change that leaves them open adds it.
    item = _put(store, "r-legacy")
    boto3.client("dynamodb").update_item(
        TableName=store.table,
        Key={"pk": {"S": "REQ#r-legacy"}, "sk": {"S": "REQ"}},
        UpdateExpression="REMOVE open_shard",
    )
    assert store.open_request_ids() == []
    assert store.defer(item, T0 + 10, "token budget") is not None  # a later queued -> queued change
    assert store.open_request_ids() == ["r-legacy"]
    clock.now = T0 + 10 + AFTER + 1
    swept = _sweep(store, queue, clock)
    assert swept.examined == 1 and swept.redispatched == ["r-legacy"]


def test_a_sweep_does_not_supersede_a_request_requeued_after_its_read(store: Store, clock: Clock) -> None:
    # The sweep reads every open request first and writes afterwards. A request still for 30 minutes whose
    # message then arrives (e.g. the 4th receive of a message whose earlier deliveries died), is claimed and
    # requeued after a retryable error between the sweep's read and its write, is queued under the SAME token
    # again: the redispatch's conditions (status, token, not_before) all hold, so the message that was just
    # handed back is superseded (no second answer, but one more message, and a requeued retry is discarded).
    stale = _put(store, "r-requeued")
    clock.now = T0 + AFTER + 1
    running = store.claim(stale, clock.now + 120)
    assert running is not None
    assert store.requeue(running, {"type": "ServerError", "message": "500"})
    assert not store.redispatch(stale, lease_ended_before=clock.now - AFTER, error=sweep.DIED)
