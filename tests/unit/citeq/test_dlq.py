"""``citeq.dlq`` against moto in process (the ``aws`` fixture): which dead-lettered requests ``reconcile`` fails,
what ``redrive`` brings back and how, and what ``show`` lists; the DLQ's messages stay unless redriven."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from citeq import dlq
from citeq.messages import encode
from citeq.models import ChatRequest, Request, RequestRecord
from citeq.queue import Queue
from citeq.store import Store

MAX_RECEIVES = 6


@pytest.fixture
def store(aws: dict[str, str]) -> Store:
    return Store(aws["ResultsTable"])


@pytest.fixture
def queue(aws: dict[str, str]) -> Queue:
    return Queue(aws["RequestsQueue"], dlq_url=aws["RequestsDeadLetterQueue"])


def _queued(store: Store, request_id: str, dispatch: str = "tok") -> RequestRecord:
    store.put_request(Request(request_id, ChatRequest.ask("q", "a")), dispatch=dispatch)
    item = store.get(request_id)
    assert item is not None
    return item


def _running(store: Store, request_id: str, lease_until: float) -> RequestRecord:
    running = store.claim(_queued(store, request_id), lease_until)
    assert running is not None
    return running


def _dead_letter(queue: Queue, *bodies: str) -> None:
    queue.send([(f"m{i}", body) for i, body in enumerate(bodies)], url=queue.dlq_url)


def _dlq_bodies(queue: Queue) -> list[str]:
    letters = queue.dead_letters(limit=50)
    queue.release(letters)
    return sorted(letter.body for letter in letters)


def _main_bodies(aws: dict[str, str]) -> list[str]:
    messages = boto3.client("sqs").receive_message(QueueUrl=aws["RequestsQueue"], MaxNumberOfMessages=10)
    return sorted(m["Body"] for m in messages.get("Messages", []))


def test_reconcile_fails_dead_lettered_requests_no_attempt_holds_and_leaves_the_letters(
    store: Store, queue: Queue
) -> None:
    dead = _queued(store, "r-dead")
    ended_lease = _running(store, "r-ended", lease_until=time.time() - 5)
    live = _running(store, "r-live", lease_until=time.time() + 600)
    stale = _queued(store, "r-stale", dispatch="new")
    answered = _running(store, "r-answered", lease_until=time.time() + 600)
    assert store.succeed(answered, {"message": {"content": "a"}, "citations": []}, 5)
    bodies = [
        encode(dead),
        encode(ended_lease),
        encode(live),
        json.dumps({"request_id": "r-stale", "dispatch": "old"}),  # a newer message owes r-stale
        encode(answered),
        "not json",
    ]
    _dead_letter(queue, *bodies)
    assert stale.dispatch == "new"

    assert dlq.reconcile(store=store, queue=queue, max_receives=MAX_RECEIVES) == 2

    for request_id in ("r-dead", "r-ended"):
        item = store.get(request_id)
        assert item is not None and item.status == "failed"
        assert item.error is not None and item.error["type"] == "DeliveryAbandoned"
        assert item.error["message"].startswith(f"delivery abandoned after {MAX_RECEIVES} receives: last error:")
    statuses = {rid: getattr(store.get(rid), "status", None) for rid in ("r-live", "r-stale", "r-answered")}
    assert statuses == {"r-live": "running", "r-stale": "queued", "r-answered": "succeeded"}
    assert _dlq_bodies(queue) == sorted(bodies)  # every letter stays, for show and redrive


def test_a_second_reconcile_finds_nothing_more_to_fail(store: Store, queue: Queue) -> None:
    _dead_letter(queue, encode(_queued(store, "r-once")))
    assert dlq.reconcile(store=store, queue=queue, max_receives=MAX_RECEIVES) == 1
    assert dlq.reconcile(store=store, queue=queue, max_receives=MAX_RECEIVES) == 0


def test_redrive_resets_failed_requests_resends_unreconciled_ones_and_empties_the_dlq(
    store: Store, queue: Queue, aws: dict[str, str]
) -> None:
    failed = _queued(store, "r-failed")
    assert store.fail(failed, {"type": "DeliveryAbandoned", "message": "x", "http_status": None})
    waiting = _queued(store, "r-waiting")
    answered = _running(store, "r-answered", lease_until=time.time() + 600)
    assert store.succeed(answered, {"message": {"content": "a"}, "citations": []}, 5)
    stale_body = json.dumps({"request_id": "r-waiting", "dispatch": "an-older-token"})
    _dead_letter(queue, encode(failed), stale_body, encode(answered), "garbage")

    assert dlq.redrive(store=store, queue=queue) == 4

    reset = store.get("r-failed")
    assert reset is not None and (reset.status, reset.generation, reset.failures) == ("queued", 1, 0)
    assert reset.dispatch not in (None, "tok")  # a new token: the stream owes its message, not the DLQ
    # The waiting request's message is sent again with the token it holds now, not the letter's old one.
    assert _main_bodies(aws) == sorted([encode(waiting), "garbage"])
    assert json.loads(encode(waiting))["dispatch"] == "tok"
    assert _dlq_bodies(queue) == []


def test_show_lists_each_letter_with_its_request_and_keeps_it(store: Store, queue: Queue) -> None:
    failed = _queued(store, "r-shown")
    assert store.fail(failed, {"type": "ServerError", "message": "503 UNAVAILABLE: busy", "http_status": 503})
    _dead_letter(queue, encode(failed), "{}")
    rows = sorted((letter.row() for letter in dlq.show(store=store, queue=queue)), key=lambda r: str(r["request_id"]))
    assert [(r["request_id"], r["status"], r["reason"]) for r in rows] == [
        (None, "unknown", "message body could not be read"),
        ("r-shown", "failed", "503 UNAVAILABLE: busy"),
    ]
    assert all(r["receives"] == 1 for r in rows)
    assert len(_dlq_bodies(queue)) == 2


def test_abandoned_reason_keeps_the_last_error_and_its_status() -> None:
    item = RequestRecord(
        "r",
        ChatRequest.ask("q", "a"),
        error={"type": "ServerError", "message": "500 ERROR: boom", "http_status": 500},
    )
    assert dlq.abandoned_reason(item, 6) == {
        "type": "DeliveryAbandoned",
        "message": "delivery abandoned after 6 receives: last error: 500 ERROR: boom",
        "http_status": 500,
    }
