"""Sending what stored states owe, driven by the results table's change stream (issue 9).

A request item's write *is* its enqueue: DynamoDB Streams delivers every change of the table, at least once
and in order per item, to the dispatcher function, which sends

- the request's SQS message when a write gives a queued request a new ``dispatch`` token (created, reset,
  deferred), delayed until its ``not_before`` (at most SQS's 15 minutes; the worker puts off a longer wait
  again when the message arrives);
- a callback job when a request with a callback reaches ``succeeded`` or ``failed`` and that generation's
  callback is not recorded as delivered.

Why a change stream rather than sending after the write: no failure between the write and the send can lose
the send (the stream keeps the record until the dispatcher succeeds, up to 24 hours, retried with the
function's partial-batch response), and a write costs nothing more. Sending twice is harmless: the claim
needs the current token, and callbacks record their delivered generation.

Records come in Lambda's DynamoDB Streams event shape (``eventName``, ``dynamodb.NewImage/OldImage/
SequenceNumber``; the table's StreamViewType is NEW_AND_OLD_IMAGES).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from citeq.messages import encode
from citeq.queue import MAX_DELAY, Queue
from citeq.store import record_from_item

log = logging.getLogger(__name__)
CALLBACK_STATUSES = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class Owed:
    """One send a stream record owes: a request message or a callback job."""

    kind: str  # "request" | "callback"
    request_id: str
    body: str
    delay: int = 0


def _s(image: dict[str, Any], name: str) -> str | None:
    value = image.get(name)
    return value.get("S") if isinstance(value, dict) else None


def owed(record: dict[str, Any], now: float) -> Owed | None:
    """What one stream record owes, if anything."""
    change = record.get("dynamodb") or {}
    new = change.get("NewImage")
    if not new or not (_s(new, "pk") or "").startswith("REQ#"):
        return None
    old = change.get("OldImage") or {}
    status = _s(new, "status")
    # The answer is not needed here (and its binary form arrives base64-encoded in Lambda's JSON event).
    new = {name: value for name, value in new.items() if name not in ("answer", "answer_gz")}
    if status == "queued":
        token = _s(new, "dispatch")
        if token is None or token == _s(old, "dispatch"):
            return None
        item = record_from_item(new)
        # Whole seconds, rounded down: a message due at not_before may arrive up to a second early (the claim
        # allows that), never late.
        delay = 0 if item.not_before is None else math.floor(item.not_before - now)
        return Owed("request", item.request_id, encode(item), min(MAX_DELAY, max(0, delay)))
    if status in CALLBACK_STATUSES and "callback" in new and _s(old, "status") != status:
        item = record_from_item(new)
        if item.callback_done is not None and item.callback_done >= item.generation:
            return None
        body = json.dumps({"request_id": item.request_id, "generation": item.generation})
        return Owed("callback", item.request_id, body)
    return None


class Dispatcher:
    """Sends what a batch of stream records owes; reports the first record whose send failed."""

    def __init__(self, requests: Queue, callbacks: Queue | None, *, wall: Callable[[], float] = time.time) -> None:
        self.requests = requests
        self.callbacks = callbacks
        self.wall = wall

    def dispatch(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Lambda's partial batch response for a stream batch: ``{"batchItemFailures": [{"itemIdentifier":
        <sequence number of the first record not fully sent>}]}`` (empty when everything went)."""
        now = self.wall()
        plans: list[tuple[str, Owed]] = []
        for record in records:
            sequence = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
            try:
                found = owed(record, now)
            except Exception:  # one unreadable record must not hold up the shard forever
                log.exception("stream record %s could not be read; skipped", sequence)
                continue
            if found is not None:
                plans.append((sequence, found))
        failed_ids = self._send([p for _, p in plans if p.kind == "request"], self.requests)
        if self.callbacks is not None:
            failed_ids |= self._send([p for _, p in plans if p.kind == "callback"], self.callbacks)
        for sequence, plan in plans:  # records are in stream order: the first failure is the checkpoint
            if f"{plan.kind}:{plan.request_id}" in failed_ids:
                log.warning("send for %s failed; the stream will deliver it again", plan.request_id)
                return {"batchItemFailures": [{"itemIdentifier": sequence}]}
        return {"batchItemFailures": []}

    @staticmethod
    def _send(plans: list[Owed], queue: Queue) -> set[str]:
        if not plans:
            return set()
        # One message per request in a batch (a request's later records supersede earlier ones in it).
        latest = {plan.request_id: plan for plan in plans}
        failures = queue.try_send([(plan.request_id, plan.body, plan.delay) for plan in latest.values()])
        kind = plans[0].kind
        return {f"{kind}:{failure.split(': ', 1)[0]}" for failure in failures}
