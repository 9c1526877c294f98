"""How the worker treats a 200 the client could not read (against moto in process, the client swapped for one
that raises): JSON of the wrong shape fails the request at once; a body cut off goes back to the queue with a
delay, until the request has used its receives; either way the call's token reservation stands (the service
counted it), where any other failure gives it back."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from citeq.errors import CiteqError, MalformedResponse, ServerError, TruncatedResponse
from citeq.messages import encode
from citeq.models import ChatOptions, ChatRequest, Message, Request, RequestRecord
from citeq.pacing import Slot
from citeq.queue import Queue
from citeq.store import Store
from citeq.worker import HandBack, ReceivedMessage, Worker, invocation_from

MAX_RECEIVES = 6


class Raising:
    """An assistant client whose every chat raises ``error``."""

    def __init__(self, error: CiteqError) -> None:
        self.error = error
        self.calls = 0

    def chat(self, request: Any, **_: Any) -> Any:
        self.calls += 1
        raise self.error


class Recording:
    """A pacer that lets every call go and records what the worker tells it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def acquire(self, assistant: str, request_id: str) -> Slot:
        return Slot()

    def settle(self, assistant: str, request_id: str, prompt_tokens: int) -> None:
        self.calls.append(("settle", request_id, str(prompt_tokens)))

    def release(self, assistant: str, request_id: str) -> None:
        self.calls.append(("release", request_id))

    def throttled(self, assistant: str, request_id: str, retry_after: float | None) -> tuple[float, str]:
        raise AssertionError("not a 429")

    def pause(self, assistant: str, request_id: str, reason: str) -> tuple[float, str]:
        raise AssertionError("not a 403")


def _run(
    aws: dict[str, str], error: CiteqError, receive_count: int = 1, pacer: Recording | None = None
) -> tuple[Store, Raising, Any]:
    store = Store(aws["ResultsTable"])
    store.put_request(Request("r-1", ChatRequest.ask("q", "a")), dispatch="tok")
    item = store.get("r-1")
    assert item is not None
    client = Raising(error)
    client_any: Any = client
    worker = Worker(
        store, client_any, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, pacer=pacer, rng=random.Random(1)
    )
    received = ReceivedMessage("m-1", encode(item), receive_count, "handle")
    message = worker.decode(received)
    assert message is not None
    try:
        outcome: Any = worker.process(message, received, invocation_from(60_000))
    except HandBack as hand_back:
        outcome = hand_back
    return store, client, outcome


def test_json_of_the_wrong_shape_fails_the_request_at_once(aws: dict[str, str]) -> None:
    store, client, outcome = _run(aws, MalformedResponse("chat completion has an unexpected shape (KeyError)"))
    assert outcome == {"request_id": "r-1", "status": "failed"} and client.calls == 1
    item = store.get("r-1")
    assert item is not None and item.status == "failed"
    assert item.error is not None and item.error["type"] == "MalformedResponse"


def test_a_truncated_body_goes_back_to_the_queue_with_a_delay(aws: dict[str, str]) -> None:
    store, client, outcome = _run(aws, TruncatedResponse("chat completion: response body was cut off"))
    assert isinstance(outcome, HandBack) and outcome.delay >= 1.0 and client.calls == 1
    item = store.get("r-1")
    assert item is not None and (item.status, item.failures) == ("queued", 1)
    assert item.error is not None and item.error["type"] == "TruncatedResponse"


@pytest.mark.parametrize("receive_count", [MAX_RECEIVES, MAX_RECEIVES + 1])
def test_a_truncated_body_on_the_last_receive_fails_the_request(aws: dict[str, str], receive_count: int) -> None:
    store, _, outcome = _run(aws, TruncatedResponse("cut off"), receive_count)
    assert outcome == {"request_id": "r-1", "status": "failed"}
    item = store.get("r-1")
    assert item is not None and item.status == "failed"
    assert item.error is not None and item.error["message"].startswith("gave up after")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MalformedResponse("wrong shape"), ("settle", "r-1", "0")),
        (TruncatedResponse("cut off"), ("settle", "r-1", "0")),
        (ServerError("busy", status=503), ("release", "r-1")),
    ],
    ids=["malformed", "truncated", "server-error"],
)
def test_a_200_the_client_could_not_read_keeps_its_budget_reservation(
    aws: dict[str, str], error: CiteqError, expected: tuple[str, ...]
) -> None:
    pacer = Recording()
    _run(aws, error, pacer=pacer)
    assert pacer.calls == [expected]


def _worker(store: Store, aws: dict[str, str]) -> Worker:
    client: Any = Raising(ServerError("never called", status=500))
    return Worker(store, client, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, rng=random.Random(1))


def test_a_message_written_before_nan_was_refused_fails_its_request_with_the_reason(aws: dict[str, str]) -> None:
    # Intake refuses NaN now; a request stored before then is still owed its message, which carries "NaN".
    store = Store(aws["ResultsTable"])
    chat = ChatRequest("a", (Message("user", "q"),), ChatOptions(filter={"k": math.nan}))
    store.put_request(Request("r-nan", chat), dispatch="tok")
    item = store.get("r-nan")
    assert item is not None and "NaN" in encode(item)
    assert _worker(store, aws).decode(ReceivedMessage("m-nan", encode(item), 1, "handle")) is None
    failed = store.get("r-nan")
    assert failed is not None and failed.status == "failed" and failed.error is not None
    assert "NaN is not a JSON number" in failed.error["message"]


def test_a_body_nested_past_the_parser_is_kept_as_a_failed_record_not_a_crash(aws: dict[str, str]) -> None:
    store = Store(aws["ResultsTable"])
    body = '{"v": 1, "request_id": "r-deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _worker(store, aws).decode(ReceivedMessage("m-deep", body, 1, "handle")) is None
    kept = store.get("malformed-m-deep")
    assert kept is not None and kept.status == "failed" and kept.error is not None
    assert "nested more than" in kept.error["message"]


class LosesEveryClaim(Store):
    """A store where another delivery always claims (or defers) the request just before this one does."""

    def claim(self, item: Any, lease_until: float) -> Any:
        return None

    def defer(self, item: Any, not_before: float, reason: str) -> Any:
        return None


@pytest.mark.parametrize("waiting", [False, True], ids=["claim", "defer-again"])
def test_a_delivery_that_loses_the_race_for_its_request_hands_the_message_back(
    aws: dict[str, str], waiting: bool
) -> None:
    # Acknowledging here could delete the one message the request still needs: the winner may be a duplicate
    # delivery of this very message, and hand the request back after a retryable error.
    import time

    store = LosesEveryClaim(aws["ResultsTable"])
    store.put_request(Request("r-race", ChatRequest.ask("q", "a")), dispatch="tok")
    item = store.get("r-race")
    assert item is not None
    if waiting:  # due after SQS's longest delay: this delivery would put it off again under a new message
        assert Store.defer(store, item, time.time() + 3600, "token budget") is not None
        item = store.get("r-race")
        assert item is not None
    client = Raising(ServerError("never called", status=500))
    client_any: Any = client
    worker = Worker(store, client_any, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, rng=random.Random(1))
    received = ReceivedMessage("m-race", encode(item), 1, "handle")
    message = worker.decode(received)
    assert message is not None
    with pytest.raises(HandBack, match="changed while this delivery read it"):
        worker.process(message, received, invocation_from(60_000))
    assert client.calls == 0
    stored = store.get("r-race")
    assert stored is not None and stored.status == "queued" and stored.dispatch == item.dispatch


def test_a_message_without_a_record_that_loses_its_claim_is_handed_back(aws: dict[str, str]) -> None:
    # _claim_slow's first branch (no record: store one under this message's token, then claim) still returns
    # None -> acknowledged when the claim fails: the same race the change fixes for the queued branch (two
    # copies of the message; the winner may requeue and need this message).
    store = LosesEveryClaim(aws["ResultsTable"])  # the record this delivery stores is claimed first by another
    item = RequestRecord(request_id="r-unstored", chat=ChatRequest.ask("q", "a"), dispatch="tok")
    client: Any = object()  # never called: the claim is lost first
    worker = Worker(store, client, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, rng=random.Random(1))
    received = ReceivedMessage("m-1", encode(item), 1, "handle")
    message = worker.decode(received)
    assert message is not None
    with pytest.raises(HandBack):
        worker.process(message, received, invocation_from(60_000))


def test_a_message_whose_request_and_batch_are_both_gone_is_answered_on_its_own(aws: dict[str, str]) -> None:
    # A redrive after the results expired (or a sample event): storing it under its batch would move the
    # counters of a batch that does not exist, leaving a counters-only batch item `batch status` cannot read.
    from citeq.models import Answer

    class Answering:
        calls = 0

        def chat(self, request: Any, **_: Any) -> Any:
            self.calls += 1
            return Answer(id="a-1", model="gpt-4o", content="yes")

    store = Store(aws["ResultsTable"])
    client = Answering()
    client_any: Any = client
    worker = Worker(store, client_any, Queue(aws["RequestsQueue"]), max_receives=MAX_RECEIVES, rng=random.Random(1))
    orphan = Request("b_gone-000001", ChatRequest.ask("q", "a"), batch_id="b_gone", seq=1, custom_id="c-1")
    received = ReceivedMessage("m-gone", encode(orphan), 1, "handle")
    message = worker.decode(received)
    assert message is not None
    assert worker.process(message, received, invocation_from(60_000))["status"] == "succeeded"
    assert client.calls == 1 and store.get_batch("b_gone") is None
    stored = store.get("b_gone-000001")
    assert stored is not None and stored.status == "succeeded" and stored.batch_id is None
    assert stored.custom_id == "c-1" and store.open_request_ids() == []
