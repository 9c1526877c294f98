"""The sweep's edges found by a review (each failed on the first version of the sweep): a message that keeps
dying must reach the DLQ before the sweep acts, a request stored before the index must still be found, a
request that changed after the sweep read it is left alone, and a message without a record that loses its
claim is handed back."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest

from citeq import dlq, sweep
from citeq.config import Settings
from citeq.messages import encode
from citeq.models import ChatRequest, Request, RequestRecord
from citeq.queue import Queue
from citeq.store import Store
from citeq.worker import HandBack, ReceivedMessage, Worker, invocation_from
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


def _put(store: Store, request_id: str) -> RequestRecord:
    store.put_request(Request(request_id, ChatRequest.ask("q", "a")), dispatch="tok")
    item = store.get(request_id)
    assert item is not None
    return item


def _sweep(store: Store, queue: Queue, clock: Clock) -> sweep.Swept:
    return sweep.sweep(store=store, queue=queue, max_receives=MAX_RECEIVES, stranded_after=AFTER, wall=clock)


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


class LosesEveryClaim(Store):
    def claim(self, item: Any, lease_until: float) -> Any:
        return None


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
