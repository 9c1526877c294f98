"""The sweep: a request that is owed a message it no longer has gets a new one (issue 14).

Each queued request is owed one SQS message (its ``dispatch`` token), and each running request holds one in
flight. If that message is gone, nothing would ever move the request again: the reconciler only reads the
DLQ. How a message can be lost: a worker that acknowledged a copy while another delivery of the same message
still needed it, a queue purged or a message past its retention period (4 days) after a long outage, or a
delete by hand. (In the local stack, moto's SQS itself lost messages under concurrent calls until
``infra.local.quick_sqs`` fixed it; that is how this was found.)

``sweep`` (run every 10 minutes by the reconciler function's second schedule) looks only when the requests
queue has no visible messages, that is, when the workers have caught up and every message that exists is in
flight or delayed. It lists the requests not yet ended from the sparse ``open`` index and re-reads the fields
it decides on, strongly consistent. A request is *stranded* when, for longer than ``stranded_after`` seconds
(default 7,200):

- it is queued, its ``not_before`` has passed and it has not changed; or
- it is running and its lease has ended.

Why two hours: a message whose every delivery dies before the claim changes nothing on the item while it
cycles in flight, 750 s per receive (the queue's visibility timeout), so it reaches the DLQ, and the
reconciler fails its request with the reason, within maxReceiveCount x 750 = 4,500 s. The sweep must not
act first, or it would reset that bound with a new message. Every shorter wait is inside it too: a message
handed back waits at most 15 minutes (``citeq.worker.hand_back_delay``), a deferral at most 15 minutes before
it is deferred again, and a visible message is received at once (the gate).

A stranded queued request gets a new dispatch token, so the stream sends it a message; a stranded running one
the same, counted as one failure (its attempt died), or fails with the reason once it has used its attempts,
as the worker's takeover does. Each write is conditional on the request being as read (its ``updated_at``),
and a message that does still exist only finds its token superseded, so a sweep that acts wrongly costs one
extra message and one more round of receives, never a second answer. A sweep that runs short of time stops
between requests; the next one goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from citeq.models import RequestRecord
from citeq.queue import Queue
from citeq.store import Store

log = logging.getLogger(__name__)

# Seconds a request must have been still before the sweep calls it stranded: past a dying message's road to the
# DLQ (maxReceiveCount 6 x VisibilityTimeout 750 s in template.yaml), with room for the reconciler's minute.
STRANDED_AFTER = 7200.0
# What the sweep reads of each open request (not its input, up to ~390 KB).
FIELDS = (
    "request_id", "batch_id", "status", "dispatch", "not_before", "updated_at", "lease", "lease_until", "failures",
)
# Seconds of the invocation kept back: the sweep stops between requests when less is left.
RESERVE = 5.0
DIED = {"type": "Abandoned", "message": "the worker stopped before recording a result, and its message was lost"}


@dataclass
class Swept:
    """What one sweep did: ``skipped`` says why it did not look; the lists hold request ids."""

    skipped: str | None = None
    examined: int = 0
    stranded: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """For the function's response and its log."""
        return {
            "skipped": self.skipped,
            "examined": self.examined,
            "stranded": len(self.stranded),
            "redispatched": len(self.redispatched),
            "failed": len(self.failed),
        }


def _epoch(stamp: str | None) -> float:
    """An RFC 3339 ``updated_at`` as epoch seconds (0.0 when absent)."""
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0


def stranded(record: RequestRecord, cutoff: float) -> bool:
    """Whether ``record`` has waited, unchanged, since before ``cutoff`` (epoch seconds) for a message that
    should have come by then."""
    if record.status == "queued":
        return max(_epoch(record.updated_at), record.not_before or 0.0) < cutoff
    if record.status == "running":
        return record.lease_until is not None and record.lease_until < cutoff
    return False


def sweep(
    *,
    store: Store,
    queue: Queue,
    max_receives: int,
    stranded_after: float = STRANDED_AFTER,
    wall: Callable[[], float] = time.time,
    time_left: Callable[[], float] = lambda: math.inf,
    dry_run: bool = False,
) -> Swept:
    """Find stranded requests and owe each a new message (or fail it, out of attempts); stops between requests
    when ``time_left()`` (seconds) falls under 5; with ``dry_run``, only lists them (``Swept.stranded``).
    Raises StoreError or QueueError when AWS fails; a sweep that stops half way has only done whole,
    conditional writes."""
    busy = Swept(skipped="the requests queue has visible messages (the workers have not caught up)")
    if queue.depth()["visible"]:
        return busy
    ids = store.open_request_ids()
    records = store.get_many(ids, FIELDS) if ids else []
    cutoff = wall() - stranded_after
    candidates = [record for record in records if stranded(record, cutoff)]
    if candidates and queue.depth()["visible"]:  # work arrived while this sweep read: look again next time
        return busy
    done = Swept(examined=len(records), stranded=[record.request_id for record in candidates])
    for record in [] if dry_run else candidates:
        if time_left() < RESERVE:
            done.skipped = f"ran short of time after {len(done.redispatched) + len(done.failed)} requests"
            break
        if record.status == "running" and record.failures + 1 >= max_receives:
            message = f"gave up after {record.failures + 1} failed attempts: {DIED['message']}"
            if store.abandon(record, {**DIED, "message": message}):
                done.failed.append(record.request_id)
        elif store.redispatch(record, lease_ended_before=cutoff, error=DIED):
            done.redispatched.append(record.request_id)
    if done.redispatched or done.failed:
        log.warning(
            "sweep: %d stranded requests sent again, %d failed: %s",
            len(done.redispatched),
            len(done.failed),
            ", ".join((done.redispatched + done.failed)[:20]),
        )
    return done
