"""Single requests (HTTP ``POST /v1/requests`` and signed webhooks): validate, then store as queued (which
enqueues them)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from citeq.errors import ValidationError
from citeq.messages import check_fits
from citeq.models import Request
from citeq.store import Store


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
    request_id: str = "",
    require_callback: bool = False,
    allow_hosts: Sequence[str] = (),
    resolve: Callable[..., Any] | None = None,
) -> Request:
    """One HTTP/webhook request body (a batch line's fields, ``custom_id`` optional) -> a Request, or
    ValidationError with the reason; writes nothing. With ``resolve`` a callback host whose name resolves to an
    internal address is refused here (a 400)."""
    request = Request.parse(
        payload,
        default_assistant=default_assistant,
        request_id=request_id,
        custom_id_required=False,
        callback_allow_hosts=allow_hosts,
        callback_resolve=resolve,
    )
    if require_callback and not request.callback_url:
        raise ValidationError("callback_url is required")
    return request


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
    """Validate one request, then store it: the write enqueues it (the table's stream drives the dispatcher).
    Nothing is written for an invalid request (an internal callback URL included); a request id stored before
    is a duplicate (its first write owes the message).

    ``caller`` ("key:…", "webhook:…") is stored with it: it scopes who may read it and which secret signs its
    callback.
    """
    request = validate(
        payload,
        default_assistant,
        request_id=request_id or "",
        require_callback=require_callback,
        allow_hosts=callback_allow_hosts,
        resolve=callback_resolve,
    )
    return store_request(request, store=store, caller=caller)


def store_request(request: Request, *, store: Store, caller: str | None = None) -> Accepted:
    """Store a validated request (``validate``'s result; named with a new id if it has none) as queued, which
    enqueues it; ValidationError if it cannot travel in one SQS message (nothing written)."""
    request = replace(request, request_id=request.request_id or new_request_id(), caller=caller)
    check_fits(request)
    if not store.put_request(request):
        return Accepted(request.request_id, duplicate=True)
    return Accepted(request.request_id)
