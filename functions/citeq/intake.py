"""Single requests (HTTP ``POST /v1/requests`` and signed webhooks): validate, then store as queued (which
enqueues them)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from citeq.batch import Item, validate_item
from citeq.errors import ValidationError
from citeq.messages import RequestMessage
from citeq.queue import MAX_BODY_BYTES
from citeq.store import NewRequest, Store


@dataclass(frozen=True)
class Accepted:
    """A request taken in."""

    request_id: str
    duplicate: bool = False


def new_request_id() -> str:
    """``r_`` + 24 random hex digits."""
    return "r_" + secrets.token_hex(12)


def validate(
    payload: Any,
    default_assistant: str | None,
    *,
    require_callback: bool = False,
    allow_hosts: Sequence[str] = (),
    resolve: Callable[..., Any] | None = None,
) -> Item:
    """One HTTP/webhook request body -> an Item, or ValidationError with the reason; writes nothing. With
    ``resolve`` a callback host whose name resolves to an internal address is refused here (a 400)."""
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object")
    record = {"custom_id": payload.get("custom_id") or "request", **payload}
    item = validate_item(0, record, default_assistant, callback_allow_hosts=allow_hosts, callback_resolve=resolve)
    if require_callback and not item.callback_url:
        raise ValidationError("callback_url is required")
    return item


def enqueue(
    payload: Any,
    *,
    store: Store,
    default_assistant: str | None,
    request_id: str | None = None,
    require_callback: bool = False,
    caller: str | None = None,
    callback_allow_hosts: Sequence[str] = (),
    callback_resolve: Callable[..., Any] | None = None,
) -> Accepted:
    """Validate one request (the fields of a batch line; ``custom_id`` optional), then store it: the write
    enqueues it (the table's stream drives the dispatcher). Nothing is written for an invalid request (an
    internal callback URL included); a request id stored before is a duplicate (its first write owes the message).

    ``caller`` ("key:…", "webhook:…") is stored with it: it scopes who may read it and which secret signs its
    callback.
    """
    item = validate(
        payload,
        default_assistant,
        require_callback=require_callback,
        allow_hosts=callback_allow_hosts,
        resolve=callback_resolve,
    )
    rid = request_id or new_request_id()
    callback = {"url": item.callback_url} if item.callback_url else None
    message = RequestMessage.model_validate(
        {
            "request_id": rid,
            "custom_id": payload.get("custom_id"),
            "assistant": item.assistant,
            "messages": item.messages,
            "options": item.options,
            "callback": callback,
            "caller": caller,
        }
    )
    if len(message.body().encode()) > MAX_BODY_BYTES:
        raise ValidationError(f"the request is larger than one SQS message ({MAX_BODY_BYTES} bytes)")
    stored = NewRequest(
        request_id=rid,
        assistant=item.assistant,
        messages=item.messages,
        options=item.options,
        custom_id=payload.get("custom_id"),
        metadata=item.metadata,
        callback=callback,
        caller=caller,
    )
    if not store.put_request(stored):
        return Accepted(rid, duplicate=True)
    return Accepted(rid)
