"""What the worker does with one SQS record: answer it exactly once, or fail it with a reason, or hand it
back to SQS with a delay. ``functions/worker/app.py`` wraps this in Powertools (batch, idempotency, logs,
metrics); everything here is plain Python over the store, the queue and the client.

Outcomes of one delivery:
    succeeded / failed   the request ended; the message is acknowledged
    skipped              it had ended (or was cancelled) already; acknowledged, nothing called
    RetryLater raised    a retryable error: the message's visibility is set to the retry delay and the record
                         is reported as a batch item failure; on the last allowed delivery the request is
                         failed with its reason first, and SQS moves the message to the DLQ
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from citeq.client import AssistantClient
from citeq.errors import CiteqError, DeadlineExceeded, ItemTooLarge, ValidationError
from citeq.queue import Queue
from citeq.store import NewRequest, RequestItem, Store

if TYPE_CHECKING:
    from citeq.messages import RequestMessage

log = logging.getLogger(__name__)
# Seconds kept back from the Lambda deadline for writing the result.
DEADLINE_MARGIN = 3.0


class Recorder(Protocol):
    """Where the worker reports metrics (Powertools Metrics in Lambda)."""

    def metric(self, name: str, unit: str, value: float) -> None:
        """Add one data point."""


class NoMetrics:
    """A Recorder that drops everything."""

    def metric(self, name: str, unit: str, value: float) -> None:
        """Drop the data point."""


@dataclass(frozen=True)
class Delivery:
    """One SQS delivery of a message."""

    message_id: str
    body: str
    receive_count: int
    receipt_handle: str


@dataclass(frozen=True)
class Completion:
    """A write to make in the same transaction as a request's result, and what to call once it is made
    (the worker app marks the request's idempotency record COMPLETED this way)."""

    item: dict[str, Any]
    committed: Callable[[], None]


class RetryLater(Exception):
    """The record must come back after ``delay`` seconds (reported as a batch item failure)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


def retry_delay(error: CiteqError, receive_count: int, rng: random.Random, *, cap: float = 900.0) -> float:
    """The service's Retry-After when given, else full-jitter backoff over deliveries (1 s .. ``cap``)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(cap, max(1.0, float(retry_after)))
    if isinstance(error, DeadlineExceeded):
        return 1.0
    return max(1.0, rng.uniform(0, min(cap, 2.0 * 2 ** max(0, receive_count - 1))))


class Worker:
    """Answers requests from the queue."""

    def __init__(
        self,
        store: Store,
        client: AssistantClient,
        queue: Queue,
        *,
        max_receives: int,
        recorder: Recorder | None = None,
        on_finished: Callable[[RequestItem], None] | None = None,
        complete: Callable[[dict[str, Any]], Completion | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.queue = queue
        self.max_receives = max_receives
        self.recorder = recorder or NoMetrics()
        self.on_finished = on_finished
        self.complete = complete
        self.clock = clock
        self.rng = rng or random.Random()

    def decode(self, delivery: Delivery) -> RequestMessage | None:
        """The message, or None after recording why it is malformed (such a message is never retried)."""
        # pydantic (~65 ms to import) loads with the first record rather than with the worker module.
        from citeq.messages import decode

        try:
            return decode(delivery.body)
        except ValidationError as exc:
            self.recorder.metric("Malformed", "Count", 1)
            log.warning("malformed message %s: %s", delivery.message_id, exc)
            self._record_malformed(delivery, str(exc))
            return None

    def _record_malformed(self, delivery: Delivery, reason: str) -> None:
        error = {"type": "ValidationError", "message": reason, "http_status": None}
        try:
            request_id = json.loads(delivery.body).get("request_id")
        except (ValueError, AttributeError):
            request_id = None
        item = self.store.get(request_id) if isinstance(request_id, str) and request_id else None
        if item is not None:
            if item.status not in ("succeeded", "failed", "cancelled"):
                self.store.fail(item, error)
            return
        # No stored request to attach the reason to: keep the message itself as a failed record.
        placeholder = NewRequest(
            request_id=f"malformed-{delivery.message_id}",
            assistant="",
            messages=[],
            options={"raw_body": delivery.body[:10_000]},
        )
        if self.store.put_request(placeholder):
            stored = self.store.get(placeholder.request_id)
            if stored is not None:
                self.store.fail(stored, error)

    def claim(self, message: RequestMessage, also: Sequence[dict[str, Any]] = ()) -> RequestItem | None:
        """The common case in one conditional write, without a read first: a queued request becomes running
        for this attempt (with the writes in ``also``, all or nothing). None when it was not simply queued, or
        a condition in ``also`` failed: then nothing was written."""
        return self.store.start(self._as_queued(message), also=also)

    def answer(
        self,
        message: RequestMessage,
        delivery: Delivery,
        deadline: float | None,
        claimed: Callable[[], RequestItem | None] | None = None,
    ) -> dict[str, Any]:
        """Answer one request; returns a small summary (what idempotency stores). Raises RetryLater.

        ``claimed`` stands in for ``claim``: the worker app claims the request in the same transaction as
        its idempotency record, and hands over the outcome."""
        running = claimed() if claimed is not None else self.claim(message)
        if running is None:
            running = self._start_slow(message)
            if running is None:
                return {"request_id": message.request_id, "status": "skipped"}
        started = self.clock()
        try:
            answer = self.client.chat(
                messages=[m.model_dump() for m in message.messages],
                assistant=message.assistant,
                model=message.options.model,
                temperature=message.options.temperature,
                filter=message.options.filter,
                deadline=deadline,
            )
        except CiteqError as exc:
            latency = round((self.clock() - started) * 1000)
            return self._failed_call(running, exc, delivery, latency)
        latency = round((self.clock() - started) * 1000)
        self.recorder.metric("AssistantLatency", "Milliseconds", latency)
        summary = {"request_id": message.request_id, "status": "succeeded"}
        completion = self.complete(summary) if self.complete is not None else None
        try:
            stored = self.store.succeed(
                running, answer.to_dict(), latency, also=[completion.item] if completion is not None else ()
            )
        except ItemTooLarge as exc:
            self.store.fail(running, exc.to_dict(), latency)
            self.recorder.metric("Failed", "Count", 1)
            self._finished(running)
            return {"request_id": message.request_id, "status": "failed"}
        if not stored:
            return {"request_id": message.request_id, "status": "skipped"}
        if completion is not None:
            completion.committed()
        self.recorder.metric("Answered", "Count", 1)
        if answer.usage:
            self.recorder.metric("PromptTokens", "Count", answer.usage["prompt_tokens"])
            self.recorder.metric("CompletionTokens", "Count", answer.usage["completion_tokens"])
        self._finished(running)
        return summary

    @staticmethod
    def _as_queued(message: RequestMessage) -> RequestItem:
        return RequestItem(
            request_id=message.request_id,
            status="queued",
            assistant=message.assistant,
            messages=[m.model_dump() for m in message.messages],
            options=message.options.model_dump(exclude_none=True),
            batch_id=message.batch_id,
            custom_id=message.custom_id,
            seq=message.seq,
            callback=message.callback.model_dump() if message.callback else None,
        )

    def _start_slow(self, message: RequestMessage) -> RequestItem | None:
        """The request was not simply queued: read it, then start it if it is running (an abandoned attempt),
        create it if it is missing (a single request enqueued without its record), or skip it if it ended."""
        item = self.store.get(message.request_id)
        if item is None:
            queued = self._as_queued(message)
            self.store.put_request(
                NewRequest(
                    request_id=queued.request_id,
                    assistant=queued.assistant,
                    messages=queued.messages,
                    options=queued.options,
                    batch_id=queued.batch_id,
                    custom_id=queued.custom_id,
                    seq=queued.seq,
                    callback=queued.callback,
                )
            )
            item = self.store.get(message.request_id)
        if item is None or item.status in ("succeeded", "failed", "cancelled"):
            return None
        return self.store.start(item)

    def _failed_call(self, item: RequestItem, exc: CiteqError, delivery: Delivery, latency: int) -> dict[str, Any]:
        error = exc.to_dict()
        if not exc.retryable:
            self.store.fail(item, error, latency)
            self.recorder.metric("Failed", "Count", 1)
            log.info("request %s failed: %s", item.request_id, error["message"])
            self._finished(item)
            return {"request_id": item.request_id, "status": "failed"}
        if delivery.receive_count >= self.max_receives:
            final = {**error, "message": f"gave up after {delivery.receive_count} deliveries: {error['message']}"}
            self.store.fail(item, final, latency)
            self.recorder.metric("Failed", "Count", 1)
            self._finished(item)
            # Still reported as a failure, so SQS moves the message to the DLQ where `citeq dlq` shows it.
            raise RetryLater(str(final["message"]), 0)
        self.store.requeue(item, error)
        delay = retry_delay(exc, delivery.receive_count, self.rng)
        self.recorder.metric("Retried", "Count", 1)
        log.info("request %s: %s; retrying in %.0fs", item.request_id, error["message"], delay)
        raise RetryLater(str(error["message"]), delay)

    def _finished(self, item: RequestItem) -> None:
        """Tell ``on_finished`` about a request that ended (read back only when it has a callback to send)."""
        if self.on_finished is None or not item.callback:
            return
        stored = self.store.get(item.request_id)
        if stored is not None:
            self.on_finished(stored)

    def hand_back(self, delivery: Delivery, retry: RetryLater) -> None:
        """Make the message visible again after the retry delay."""
        self.queue.delay(delivery.receipt_handle, retry.delay)


def deadline_from(remaining_ms: int, clock: Callable[[], float] = time.monotonic) -> float:
    """An absolute deadline (on ``clock``) that leaves time to record the result before Lambda's own."""
    return clock() + remaining_ms / 1000 - DEADLINE_MARGIN
