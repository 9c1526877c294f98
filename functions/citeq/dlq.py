"""The dead-letter queue: what is in it and why, and sending it back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from citeq.batch import message_from_item
from citeq.queue import DeadLetter, Queue
from citeq.store import RequestItem, Store


@dataclass(frozen=True)
class Letter:
    """A DLQ message with the request it carries (if it could be read)."""

    letter: DeadLetter
    request_id: str | None
    item: RequestItem | None

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


def _request_id(body: str) -> str | None:
    try:
        value = json.loads(body).get("request_id")
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
            for rid in [_request_id(letter.body)]
        ]
    finally:
        queue.release(letters)


def redrive(*, store: Store, queue: Queue, limit: int = 1000) -> int:
    """Move DLQ messages back to the queue; failed requests are reset so they are tried again."""
    letters = queue.dead_letters(limit, hold_seconds=120)
    moved = []
    for letter in letters:
        rid = _request_id(letter.body)
        item = store.get(rid) if rid else None
        if item is not None and item.status in ("failed", "cancelled"):
            item = store.reset(item) or item
        if item is not None and item.status not in ("succeeded",):
            body = message_from_item(item).body()
            moved.append(
                DeadLetter(letter.message_id, body, letter.receipt_handle, letter.receive_count, letter.sent_at)
            )
        else:
            moved.append(letter)
    queue.redrive(moved)
    return len(moved)
