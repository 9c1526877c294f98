"""Make moto's SQS cost what SQS costs per call, not per message in the queue.

moto asks for the current time through ``datetime`` arithmetic once per message checked, and several of its
calls check every message of the queue more than once:

- every message handed out by ReceiveMessage is checked against the retention period by reading *all* the
  queue's attributes three times, and each read counts the visible, delayed and in-flight messages;
- every SendMessage reads all the attributes once to learn ``ContentBasedDeduplication``.

With 1,000 messages queued one receive of 5 messages took ~100 ms of CPU, and sending 1,000 messages grew
quadratically. Here the clock is ``time.time()`` (the same value moto computes), the retention check reads
the one attribute it needs, and the attribute counts take one pass over the messages instead of three.

moto's server answers on several threads, and its queues are not safe for that: ``DeleteMessage`` rebuilds
the queue's message list without the lock that ``SendMessage`` appends under, so a message sent while
another is deleted can vanish (in a test of 1,000 sends against concurrent deletes, 139 were lost; in a
10,000-question run, 11 requests were left queued with no message, issue 14), and two concurrent receives
change the in-flight set while iterating it. SQS loses nothing. Here delete, receive and visibility changes
take the queue's own lock (a receive's long poll waits on it as moto's does, releasing it meanwhile).
Otherwise behaviour is unchanged; this only runs in the local stack's moto process.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any

_patched = False


def _now_millis() -> float:
    return time.time() * 1000


def _retention_ok(backend: Any, queue_name: str, message: Any) -> bool:
    queue = backend.get_queue(queue_name)
    return bool(queue.message_retention_period + message.sent_timestamp / 1000 > time.time())


def _counts(queue: Any) -> tuple[int, int, int]:
    """(visible and not delayed, delayed, not visible) in one pass with one reading of the clock."""
    now = _now_millis()
    ready = delayed = invisible = 0
    for message in queue._messages:
        visible = now > message.visible_at
        is_delayed = now < message.delayed_until
        ready += visible and not is_delayed
        delayed += is_delayed
        invisible += not visible
    return ready, delayed, invisible


def _attributes(queue: Any) -> dict[str, Any]:
    """``Queue.attributes`` with the three message counts taken in one pass."""
    from moto.core.utils import camelcase_to_underscores

    ready, delayed, invisible = _counts(queue)
    counts = {
        "ApproximateNumberOfMessages": ready,
        "ApproximateNumberOfMessagesDelayed": delayed,
        "ApproximateNumberOfMessagesNotVisible": invisible,
    }
    names = list(queue.BASE_ATTRIBUTES)
    if queue.fifo_queue:
        names += queue.FIFO_ATTRIBUTES
    if queue.kms_master_key_id:
        names += queue.KMS_ATTRIBUTES
    result: dict[str, Any] = {
        name: counts[name] if name in counts else getattr(queue, camelcase_to_underscores(name)) for name in names
    }
    if queue.policy:
        result["Policy"] = queue.policy
    if queue.redrive_policy:
        result["RedrivePolicy"] = json.dumps(queue.redrive_policy)
    return {key: str(value).lower() if isinstance(value, bool) else value for key, value in result.items()}


def _under_queue_lock(backend_method: Callable[..., Any]) -> Callable[..., Any]:
    """A backend method (``self, queue_name, ...``) run holding that queue's message lock."""

    @functools.wraps(backend_method)
    def call(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with backend.get_queue(queue_name)._messages_lock:
            return backend_method(backend, queue_name, *args, **kwargs)

    return call


def make_sqs_quick() -> None:
    """Patch moto's SQS models once per process."""
    global _patched
    if _patched:
        return
    from moto.sqs import models

    models.unix_time = time.time  # type: ignore[assignment]
    models.unix_time_millis = _now_millis  # type: ignore[assignment]
    models.SQSBackend.is_message_valid_based_on_retention_period = _retention_ok  # type: ignore[method-assign]
    models.Queue.attributes = property(_attributes)  # type: ignore[method-assign,assignment]
    # The lock is a Condition over an RLock: a receive's wait for messages releases it fully while it waits.
    for name in ("receive_message", "delete_message", "change_message_visibility"):
        setattr(models.SQSBackend, name, _under_queue_lock(getattr(models.SQSBackend, name)))
    _patched = True
