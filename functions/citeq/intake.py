"""Single requests (HTTP ``POST /v1/requests`` and signed webhooks): validate, store as queued, enqueue."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from citeq.batch import validate_item
from citeq.errors import ValidationError
from citeq.messages import RequestMessage
from citeq.queue import Queue
from citeq.store import NewRequest, Store


@dataclass(frozen=True)
class Accepted:
    """A request taken in."""

    request_id: str
    duplicate: bool = False


def new_request_id() -> str:
    """``r_`` + 24 random hex digits."""
    return "r_" + secrets.token_hex(12)


def enqueue(
    payload: Any,
    *,
    store: Store,
    queue: Queue,
    default_assistant: str | None,
    request_id: str | None = None,
    require_callback: bool = False,
) -> Accepted:
    """Validate one request (the fields of a batch line; ``custom_id`` optional), store it, send it."""
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object")
    record = {"custom_id": payload.get("custom_id") or "request", **payload}
    item = validate_item(0, record, default_assistant)
    if require_callback and not item.callback_url:
        raise ValidationError("callback_url is required")
    rid = request_id or new_request_id()
    callback = {"url": item.callback_url} if item.callback_url else None
    stored = NewRequest(
        request_id=rid,
        assistant=item.assistant,
        messages=item.messages,
        options=item.options,
        custom_id=payload.get("custom_id"),
        metadata=item.metadata,
        callback=callback,
    )
    if not store.put_request(stored):
        return Accepted(rid, duplicate=True)
    message = RequestMessage.model_validate(
        {
            "request_id": rid,
            "custom_id": payload.get("custom_id"),
            "assistant": item.assistant,
            "messages": item.messages,
            "options": item.options,
            "callback": callback,
        }
    )
    queue.send([(rid, message.body())])
    return Accepted(rid)
