"""The dead-letter queue: what is in it and why, reconciling it with the requests, and sending it back.

A message reaches the DLQ when every delivery it got ended without the worker recording an outcome
(invocations that crashed, timed out or were throttled). ``reconcile`` (run on a schedule by the reconciler
function) fails each such request with the reason, which moves its batch counters and owes its callback;
the message stays in the DLQ, so ``redrive`` can still bring the request back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from citeq.messages import encode
from citeq.models import RequestRecord
from citeq.queue import DeadLetter, Queue
from citeq.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Letter:
    """A DLQ message with the request it carries (if it could be read)."""

    letter: DeadLetter
    request_id: str | None
    item: RequestRecord | None

    def row(self) -> dict[str, Any]:
        """For ``citeq dlq show``."""
        item = self.item
        return {
            "message_id": self.letter.message_id,
            "request_id": self.request_id,
            "batch_id": item.batch_id if item else None,
            "custom_id": item.custom_id if item else None,
            "receives": self.letter.receive_count,
            "status": item.status if item else "unknown",
            "reason": (item.error or {}).get("message") if item else "message body could not be read",
        }


def _field(body: str, name: str) -> str | None:
    try:
        value = json.loads(body).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def show(*, store: Store, queue: Queue, limit: int = 100) -> list[Letter]:
    """List DLQ messages (they stay in the DLQ)."""
    letters = queue.dead_letters(limit)
    try:
        return [
            Letter(letter, rid, store.get(rid) if rid else None)
            for letter in letters
            for rid in [_field(letter.body, "request_id")]
        ]
    finally:
        queue.release(letters)


def abandoned_reason(item: RequestRecord, receives: int) -> dict[str, Any]:
    """The error recorded on a request whose message was dead-lettered after ``receives`` deliveries (the
    queue's maxReceiveCount: a DLQ message's own receive count also counts the DLQ's readers)."""
    last = (item.error or {}).get("message") or "the worker stopped before recording a result"
    return {
        "type": "DeliveryAbandoned",
        "message": f"delivery abandoned after {receives} receives: last error: {last}",
        "http_status": (item.error or {}).get("http_status"),
    }


def reconcile(*, store: Store, queue: Queue, max_receives: int, limit: int = 500, now: float | None = None) -> int:
    """Fail every request whose current message sits in the DLQ and that no attempt holds; returns how many.
    The messages stay in the DLQ (for ``dlq show`` and ``redrive``)."""
    letters = queue.dead_letters(limit, hold_seconds=60)
    ended = 0
    try:
        for letter in letters:
            rid = _field(letter.body, "request_id")
            item = store.get(rid) if rid else None
            if item is None or item.status not in ("queued", "running"):
                continue
            token = _field(letter.body, "dispatch")
            if token is not None and item.dispatch not in (None, token):
                continue  # a newer message owes this request: the letter is stale
            if item.lease_live(time.time() if now is None else now):
                continue  # an attempt may still record an outcome; look again next time
            if store.abandon(item, abandoned_reason(item, max_receives)):
                ended += 1
                log.warning("request %s failed: its message was dead-lettered", item.request_id)
    finally:
        queue.release(letters)
    return ended


def redrive(*, store: Store, queue: Queue, limit: int = 1000) -> int:
    """Bring DLQ messages' requests back: failed (or cancelled) ones are reset, which enqueues them anew
    through the stream; ones not yet reconciled get their message sent again. Returns how many letters."""
    letters = queue.dead_letters(limit, hold_seconds=120)
    resend: list[DeadLetter] = []
    done: list[DeadLetter] = []
    for letter in letters:
        rid = _field(letter.body, "request_id")
        item = store.get(rid) if rid else None
        if item is not None and item.status in ("failed", "cancelled"):
            store.reset(item)
            done.append(letter)
        elif item is not None and item.status in ("queued", "running"):
            body = encode(item)
            resend.append(
                DeadLetter(letter.message_id, body, letter.receipt_handle, letter.receive_count, letter.sent_at)
            )
        elif item is not None:
            done.append(letter)  # answered meanwhile: nothing owed
        else:
            resend.append(letter)  # unreadable: back to the worker, which records it as malformed
    queue.redrive(resend)
    queue.delete_letters(done)
    return len(letters)
