"""What the worker does with one SQS delivery: answer its request exactly once, or fail it with a reason, or
put it off, or hand it back to SQS. ``functions/worker/app.py`` wraps this in Powertools (batch processing,
logs, metrics); everything here is plain Python over the store, the pacer and the client.

Exactly-once lives in the request item alone (``citeq.store``): a delivery claims the request with one
conditional write that sets a lease ending with the invocation's deadline, and the answer is written only
while that lease is held. Outcomes of one delivery:

    succeeded / failed   the request ended; the message is acknowledged
    deferred             it must wait (token budget, a 429, a paused assistant): the item is queued with the
                         time it may run and why, under a new dispatch token; the stream sends a fresh delayed
                         message, so waiting never spends a delivery attempt. Acknowledged.
    skipped              it had ended, was cancelled, or this message was superseded: acknowledged, nothing called
    HandBack raised      retry this message later (a retryable error, an unexpected exception, a live lease
                         held by another delivery, or another delivery that changed the request between this
                         one's read and its claim): its visibility is set to the delay and the record is reported
                         as a batch item failure
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from citeq.client import AssistantClient
from citeq.errors import (
    CiteqError,
    DeadlineExceeded,
    ItemTooLarge,
    MalformedResponse,
    PermissionDeniedError,
    RateLimitError,
    ValidationError,
)
from citeq.messages import decode
from citeq.models import ChatOptions, ChatRequest, Request, RequestRecord
from citeq.pacing import Pacer, Unpaced
from citeq.queue import Queue
from citeq.store import Store

log = logging.getLogger(__name__)
# Seconds before a message that lost a race for its request comes back to look again.
MOVED_DELAY = 2.0
# Seconds kept back from the Lambda deadline for writing the result.
DEADLINE_MARGIN = 3.0
# The longest a worker sleeps for a budget slot instead of putting the request off (issue 10: "no Lambda
# sleeps waiting for budget beyond a brief moment").
BRIEF_WAIT = 1.0
ENDED = frozenset({"succeeded", "failed", "cancelled"})


class Recorder(Protocol):
    """Where the worker reports metrics (Powertools Metrics in Lambda)."""

    def metric(self, name: str, unit: str, value: float) -> None:
        """Add one data point."""


class NoMetrics:
    """A Recorder that drops everything."""

    def metric(self, name: str, unit: str, value: float) -> None:
        """Drop the data point."""


@dataclass(frozen=True)
class ReceivedMessage:
    """One receipt of a request message from SQS: its body, how often SQS has handed it out, and the handle
    that changes its visibility."""

    message_id: str
    body: str
    receive_count: int
    receipt_handle: str


@dataclass(frozen=True)
class Invocation:
    """The time an invocation has: ``deadline`` on the client's monotonic clock (for calls) and ``lease_until``
    in epoch seconds (stored on the request as the end of this attempt's lease)."""

    deadline: float
    lease_until: float


class HandBack(Exception):
    """The message must come back after ``delay`` seconds (reported as a batch item failure)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


def _moved() -> HandBack:
    return HandBack("the request changed while this delivery read it", MOVED_DELAY)


def hand_back_delay(error: CiteqError | None, failures: int, rng: random.Random, *, cap: float = 900.0) -> float:
    """Seconds before a failed request's message comes back: the service's Retry-After when it sent one, else
    full-jitter backoff over the failures so far (1 s .. ``cap``)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(cap, max(1.0, float(retry_after)))
    if isinstance(error, DeadlineExceeded):
        return 1.0
    return max(1.0, rng.uniform(0, min(cap, 2.0 * 2 ** max(0, failures - 1))))


class Worker:
    """Answers requests from the queue."""

    def __init__(
        self,
        store: Store,
        client: AssistantClient,
        queue: Queue,
        *,
        max_receives: int,
        pacer: Pacer | None = None,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.queue = queue
        self.max_receives = max_receives
        self.pacer = pacer or Unpaced()
        self.recorder = recorder or NoMetrics()
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.rng = rng or random.Random()

    # ------------------------------------------------------------------ decoding
    def decode(self, delivery: ReceivedMessage) -> RequestRecord | None:
        """The message's request as a queued record (with its generation and dispatch token), or None after
        recording why it is malformed (such a message is never retried)."""
        try:
            return decode(delivery.body)
        except ValidationError as exc:
            self.recorder.metric("Malformed", "Count", 1)
            log.warning("malformed message %s: %s", delivery.message_id, exc)
            self._record_malformed(delivery, str(exc))
            return None

    def _record_malformed(self, delivery: ReceivedMessage, reason: str) -> None:
        error = {"type": "ValidationError", "message": reason, "http_status": None}
        try:
            request_id = json.loads(delivery.body).get("request_id")
        except (ValueError, AttributeError, RecursionError):  # RecursionError: a body nested past the parser
            request_id = None
        item = self.store.get(request_id) if isinstance(request_id, str) and request_id else None
        if item is not None:
            if item.status == "queued" or (item.status == "running" and not item.lease_live(self.wall())):
                self.store.abandon(item, error)
            return
        # No stored request to attach the reason to: keep the message itself as a failed record.
        placeholder = Request(
            f"malformed-{delivery.message_id}",
            ChatRequest("", (), ChatOptions()),
            metadata={"raw_body": delivery.body[:10_000]},
        )
        self.store.put_failed(placeholder, error)

    # ------------------------------------------------------------------ one delivery
    def process(self, message: RequestRecord, delivery: ReceivedMessage, invocation: Invocation) -> dict[str, Any]:
        """Answer, fail, defer or skip one request (``message`` as ``decode`` reads it); returns a small summary.
        Raises HandBack."""
        running = self.store.claim(message, invocation.lease_until)
        if running is None:
            running = self._claim_slow(message, invocation)
            if running is None:
                return {"request_id": message.request_id, "status": "skipped"}
        try:
            return self._attempt(running, delivery, invocation)
        except HandBack:
            raise
        except Exception as exc:
            # Not a citeq error: a bug or an unforeseen failure. Release the lease so the next delivery can
            # try again at once (instead of waiting for the lease to end), and say so loudly.
            log.exception("request %s: unexpected %s; lease released", running.request_id, type(exc).__name__)
            self.recorder.metric("Crashed", "Count", 1)
            error = {"type": type(exc).__name__, "message": f"unexpected error: {type(exc).__name__}"}
            return self._retry_or_fail(running, error, None, delivery, None)

    def _claim_slow(self, message: RequestRecord, invocation: Invocation) -> RequestRecord | None:
        """The request was not simply queued under this message: read it and decide. Returns the running
        request when this delivery may go on; None when there is nothing to do; raises HandBack when another
        delivery holds a live lease."""
        item = self.store.get(message.request_id)
        if item is None:
            # Enqueued without its record (a message sent by hand or by an older submitter): store it under
            # this message's token (the stream then owes a copy of this message, which will find it claimed).
            if message.batch_id is not None and self.store.get_batch(message.batch_id) is None:
                # Its batch does not exist (a sample event, or a redrive after the results expired): answered on
                # its own, since there are no counters to move (moving them would leave a counters-only batch).
                log.info("request %s: batch %s does not exist; answered alone", message.request_id, message.batch_id)
                message = replace(message, batch_id=None, seq=None)
            self.store.put_request(message, dispatch=message.dispatch)
            item = self.store.get(message.request_id)
            if item is None:
                return None
            return self._claim_read(item, invocation)
        now = self.wall()
        if item.status in ENDED:
            return None
        if item.status == "queued":
            if message.dispatch is not None and item.dispatch not in (None, message.dispatch):
                log.info("request %s: message superseded by a newer one", item.request_id)
                return None
            if item.not_before is not None and item.not_before > now + 1.0:
                # Waits longer than SQS's 15-minute delay arrive early: put off again under a new message.
                if self.store.defer(item, item.not_before, item.wait_reason or "waiting") is None:
                    raise _moved()
                return None
            return self._claim_read(item, invocation)
        if item.lease_live(now):
            wait = max(1.0, (item.lease_until or now) - now + 1.0)
            raise HandBack("another delivery holds a live lease", wait)
        # Running with its lease ended: the attempt holding it died. Take over (counted as a failure).
        running = self.store.take_over(item, invocation.lease_until)
        if running is not None and running.failures >= self.max_receives:
            error = dict(item.error or {"type": "Abandoned", "message": "the worker stopped before recording a result"})
            message_text = f"gave up after {running.failures} failed attempts: {error.get('message')}"
            self._fail(running, {**error, "message": message_text}, None)
            return None
        return running

    def _claim_read(self, item: RequestRecord, invocation: Invocation) -> RequestRecord:
        """Claim a request this delivery has just read as queued under its message; raises HandBack if another
        delivery (perhaps of this very message) moved it in between: the message must not be acknowledged,
        since that delivery may hand the request back and need it."""
        running = self.store.claim(item, invocation.lease_until)
        if running is None:
            raise _moved()
        return running

    def _attempt(self, running: RequestRecord, delivery: ReceivedMessage, invocation: Invocation) -> dict[str, Any]:
        slot = self.pacer.acquire(running.assistant, running.request_id)
        if slot.wait_until is not None:
            wait = slot.wait_until - self.wall()
            if wait > BRIEF_WAIT:
                return self._defer(running, slot.wait_until, slot.reason)
            self.sleep(max(0.0, wait))  # its slot is a moment away: cheaper than a round trip through SQS
        started = self.clock()
        try:
            answer = self.client.chat(running.chat, deadline=invocation.deadline)
        except RateLimitError as exc:
            until, reason = self.pacer.throttled(running.assistant, running.request_id, exc.retry_after)
            self.recorder.metric("RateLimited", "Count", 1)
            return self._defer(running, until, reason)
        except PermissionDeniedError as exc:
            until, reason = self.pacer.pause(running.assistant, running.request_id, str(exc))
            return self._defer(running, until, reason)
        except CiteqError as exc:
            if isinstance(exc, MalformedResponse):
                # A 200 the client could not read was still counted by the service: its reservation stands, at
                # the estimate (its real size is unknown), instead of being given back.
                self.pacer.settle(running.assistant, running.request_id, 0)
            else:
                self.pacer.release(running.assistant, running.request_id)
            latency = round((self.clock() - started) * 1000)
            return self._failed_call(running, exc, delivery, latency)
        latency = round((self.clock() - started) * 1000)
        self.recorder.metric("AssistantLatency", "Milliseconds", latency)
        prompt_tokens = int(answer.usage["prompt_tokens"]) if answer.usage else 0
        self.pacer.settle(running.assistant, running.request_id, prompt_tokens)
        try:
            stored = self.store.succeed(running, answer.to_dict(), latency)
        except ItemTooLarge as exc:
            self._fail(running, exc.to_dict(), latency)
            return {"request_id": running.request_id, "status": "failed"}
        if not stored:
            return {"request_id": running.request_id, "status": "skipped"}
        self.recorder.metric("Answered", "Count", 1)
        if answer.usage:
            self.recorder.metric("PromptTokens", "Count", answer.usage["prompt_tokens"])
            self.recorder.metric("CompletionTokens", "Count", answer.usage["completion_tokens"])
        return {"request_id": running.request_id, "status": "succeeded"}

    def _defer(self, running: RequestRecord, until: float, reason: str) -> dict[str, Any]:
        deferred = self.store.defer(running, until, reason)
        if deferred is None:  # our lease was taken over: the request is someone else's now
            self.pacer.release(running.assistant, running.request_id)
            return {"request_id": running.request_id, "status": "skipped"}
        self.recorder.metric("Deferred", "Count", 1)
        log.info("request %s deferred %.1fs: %s", running.request_id, until - self.wall(), reason)
        return {"request_id": running.request_id, "status": "deferred", "until": until}

    def _failed_call(
        self, item: RequestRecord, exc: CiteqError, delivery: ReceivedMessage, latency: int
    ) -> dict[str, Any]:
        error = exc.to_dict()
        if not exc.retryable:
            self._fail(item, error, latency)
            log.info("request %s failed: %s", item.request_id, error["message"])
            return {"request_id": item.request_id, "status": "failed"}
        return self._retry_or_fail(item, error, exc, delivery, latency)

    def _retry_or_fail(
        self,
        item: RequestRecord,
        error: dict[str, Any],
        exc: CiteqError | None,
        delivery: ReceivedMessage,
        latency: int | None,
    ) -> dict[str, Any]:
        """A real failure: hand the message back with a delay, or, once the request has used its attempts
        (failures recorded on the item, or this message's receives), fail it with the reason."""
        # A claim made from the message's own data does not know the failures recorded so far: read them.
        stored = self.store.get(item.request_id)
        failures = (stored.failures if stored is not None else item.failures) + 1
        if max(failures, delivery.receive_count) >= self.max_receives:
            final = {**error, "message": f"gave up after {failures} failed attempts: {error['message']}"}
            self._fail(item, final, latency)
            return {"request_id": item.request_id, "status": "failed"}
        if not self.store.requeue(item, error):
            return {"request_id": item.request_id, "status": "skipped"}
        delay = hand_back_delay(exc, failures, self.rng)
        self.recorder.metric("Retried", "Count", 1)
        log.info("request %s: %s; retrying in %.0fs", item.request_id, error["message"], delay)
        raise HandBack(str(error["message"]), delay)

    def _fail(self, item: RequestRecord, error: dict[str, Any], latency: int | None) -> None:
        if self.store.fail(item, error, latency):
            self.recorder.metric("Failed", "Count", 1)

    def hand_back(self, delivery: ReceivedMessage, hand_back: HandBack) -> None:
        """Make the message visible again after the delay."""
        self.queue.delay(delivery.receipt_handle, hand_back.delay)


def invocation_from(
    remaining_ms: int, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
) -> Invocation:
    """The invocation's time: a call deadline that leaves time to record the result before Lambda's own, and a
    lease ending with the invocation."""
    remaining = remaining_ms / 1000
    return Invocation(deadline=clock() + remaining - DEADLINE_MARGIN, lease_until=wall() + remaining)
