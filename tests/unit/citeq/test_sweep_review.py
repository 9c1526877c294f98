"""Review of the sweep (b207460): cases where it, or the worker change that came with it, goes wrong.

Each test marked ``xfail(strict=True)`` asserts the behaviour the change is meant to have and fails on the
code as committed (run with ``--runxfail`` to see the failure); when the defect is fixed it passes, and strict
xfail then flags the marker for removal."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest

from citeq import dlq, sweep
from citeq.messages import encode
from citeq.models import ChatRequest, Request, RequestRecord
from citeq.queue import Queue
from citeq.store import Store
from citeq.worker import HandBack, ReceivedMessage, Worker, invocation_from

MAX_RECEIVES = 6
AFTER = 1800.0
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(aws: dict[str, str], clock: Clock) -> Store:
    return Store(aws["ResultsTable"], clock=clock)


@pytest.fixture
def queue(aws: dict[str, str]) -> Queue:
    return Queue(aws["RequestsQueue"], dlq_url=aws["RequestsDeadLetterQueue"])


def _put(store: Store, request_id: str) -> RequestRecord:
    store.put_request(Request(request_id, ChatRequest.ask("q", "a")), dispatch="tok")
    item = store.get(request_id)
    assert item is not None
    return item


def _sweep(store: Store, queue: Queue, clock: Clock) -> sweep.Swept:
    return sweep.sweep(store=store, queue=queue, max_receives=MAX_RECEIVES, stranded_after=AFTER, wall=clock)


@pytest.mark.xfail(strict=True, reason="review defect: the sweep resets a poison message's receive count")
def test_a_request_whose_deliveries_die_before_any_write_still_fails_after_max_receives(
    store: Store, queue: Queue, clock: Clock, aws: dict[str, str]
) -> None:
    # Deliveries that end without a write (the invocation crashes/times out/is throttled before the claim)
    # leave the item unchanged while its message cycles in flight: 750 s per receive, six receives = 4,500 s
    # before the DLQ. The queue shows nothing visible most of that time, so at 1,800 s the sweep calls the
    # request stranded and gives it a new token. The original message then reaches the DLQ, the reconciler
    # finds its token stale and skips it, and the new message starts again at receive 1: the request never
    # fails, however often its deliveries die (maxReceiveCount / CITEQ_MAX_RECEIVES no longer bound it).
    item = _put(store, "r-poison")
    original = encode(item)  # the message the dispatcher sent (token "tok")
    sqs = boto3.client("sqs")
    for _ in range(3):  # three sweep periods of a message that is never lost, only never processed
        clock.now += AFTER + 1
        assert _sweep(store, queue, clock).redispatched == ["r-poison"]
        # The message of the generation before reaches the DLQ after its 6 receives ...
        sqs.send_message(QueueUrl=aws["RequestsDeadLetterQueue"], MessageBody=original)
        dlq.reconcile(store=store, queue=queue, max_receives=MAX_RECEIVES, now=clock.now)
        current = store.get("r-poison")
        assert current is not None
        original = encode(current)
        # ... and the request should then be failed with its reason, as before the sweep existed.
        if current.status == "failed":
            break
    assert store.get("r-poison").status == "failed"  # type: ignore[union-attr]


def test_pre_existing_open_requests_are_never_listed_for_the_sweep(
    store: Store, queue: Queue, clock: Clock, aws: dict[str, str]
) -> None:
    # Items written by the previous release have no open_shard, and no queued->queued transition (defer,
    # requeue, redispatch) adds it: only a reset from a terminal status does. A lost message of a request
    # that was open at deploy time is never found, although README says a request carries open_shard "from
    # its creation until it ends".
    item = _put(store, "r-legacy")
    boto3.client("dynamodb").update_item(
        TableName=store.table,
        Key={"pk": {"S": "REQ#r-legacy"}, "sk": {"S": "REQ"}},
        UpdateExpression="REMOVE open_shard",
    )
    assert store.defer(item, T0 + 10, "token budget") is not None  # a later queued -> queued change
    clock.now = T0 + 10 + AFTER + 1
    swept = _sweep(store, queue, clock)
    assert swept.examined == 0 and swept.redispatched == []  # stranded, and invisible to the sweep


@pytest.mark.xfail(strict=True, reason="review defect: redispatch does not check what the sweep read (updated_at)")
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


class LosesEveryClaim(Store):
    def claim(self, item: Any, lease_until: float) -> Any:
        return None


@pytest.mark.xfail(strict=True, reason="review defect: the store-it-then-claim branch still acknowledges")
def test_a_message_without_a_record_that_loses_its_claim_is_handed_back(aws: dict[str, str]) -> None:
    # _claim_slow's first branch (no record: store one under this message's token, then claim) still returns
    # None -> acknowledged when the claim fails: the same race the change fixes for the queued branch (two
    # copies of the message; the winner may requeue and need this message).
    store = LosesEveryClaim(aws["ResultsTable"])
    item = RequestRecord(request_id="r-unstored", chat=ChatRequest.ask("q", "a"), dispatch="tok")
    client: Any = object()  # never called: the claim is lost first
    worker = Worker(store, client, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, rng=random.Random(1))
    received = ReceivedMessage("m-1", encode(item), 1, "handle")
    message = worker.decode(received)
    assert message is not None
    with pytest.raises(HandBack):
        worker.process(message, received, invocation_from(60_000))
