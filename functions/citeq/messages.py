"""The SQS message body: a versioned JSON contract between submitters and the worker.

Version 1::

    {"v": 1,
     "request_id": "b_01J...-000001",        # unique; the idempotency key
     "batch_id": "b_01J..." | null,           # null for single requests (HTTP, webhook)
     "custom_id": "q-17" | null,              # the caller's id, echoed in results and callbacks
     "seq": 1 | null,                          # 1-based input order within the batch
     "assistant": "my-assistant",
     "messages": [{"role": "user", "content": "..."}],
     "options": {"model": "gpt-4o", "temperature": 0.0, "filter": {...}},   # each optional
     "callback": {"url": "https://..."} | null,
     "generation": 0,                          # bumped by retry/redrive: a new try is not a duplicate
     "dispatch": "9f2c..." | absent,           # the stored request's token for this message: a claim must
                                               # carry the current one, so a superseded message does nothing
     "caller": "key:0123456789abcdef" | absent} # who created it (optional; scopes reads, signs callbacks)

A body with another ``v`` is rejected with a clear reason (and recorded, not retried).
"""

from __future__ import annotations

import json
from typing import Any

from citeq.errors import ValidationError
from citeq.models import OPTIONS, ChatOptions, ChatRequest, Request, RequestRecord, check_assistant, parse_messages
from citeq.text import check_text, loads

VERSION = 1
# SQS accepts bodies up to 1 MiB (the queue's MaximumMessageSize is set to that in template.yaml).
MAX_BODY_BYTES = 1_048_576
_FIELDS = frozenset(
    {"v", "request_id", "batch_id", "custom_id", "seq", "assistant", "messages", "options", "callback"}
    | {"generation", "dispatch", "caller"}
)
_CALLBACK_PREFIXES = ("http://", "https://")


def check_fits(request: Request, what: str = "the request") -> None:
    """ValidationError naming ``what`` when ``request``'s body is larger than one SQS message (1 MiB)."""
    if len(encode(request).encode()) > MAX_BODY_BYTES:
        raise ValidationError(f"{what} is larger than one SQS message ({MAX_BODY_BYTES} bytes)")


def encode(request: Request) -> str:
    """The JSON body sent to SQS (compact, UTF-8 as is, unset fields left out); a RequestRecord's generation and
    dispatch token travel with it."""
    body: dict[str, Any] = {
        "v": VERSION,
        "request_id": request.request_id,
        "batch_id": request.batch_id,
        "custom_id": request.custom_id,
        "seq": request.seq,
        "assistant": request.chat.assistant,
        "messages": [m.to_dict() for m in request.chat.messages],
        "options": request.chat.options.to_dict(),
        "callback": {"url": request.callback_url} if request.callback_url else None,
    }
    if isinstance(request, RequestRecord):
        body["generation"] = request.generation
        body["dispatch"] = request.dispatch
    body["caller"] = request.caller
    return json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":"), ensure_ascii=False)


def _optional_str(raw: dict[str, Any], name: str, longest: int | None = None) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or (longest is not None and len(value) > longest):
        limit = f" of at most {longest} characters" if longest is not None else ""
        raise ValidationError(f"{name} must be a string{limit}")
    return value


def _optional_int(raw: dict[str, Any], name: str, least: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValidationError(f"{name} must be an integer of at least {least}")
    return value


def _callback_url(value: Any) -> str | None:
    if value is None:
        return None
    url = value.get("url") if isinstance(value, dict) and set(value) == {"url"} else None
    if not isinstance(url, str) or not url.startswith(_CALLBACK_PREFIXES) or any(c.isspace() for c in url):
        raise ValidationError('callback must be {"url": "http(s)://..."}')
    return url


def _record(raw: dict[str, Any]) -> RequestRecord:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    check_text(raw)
    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 200:
        raise ValidationError("request_id must be a string of 1 to 200 characters")
    options = raw.get("options", {})
    if not isinstance(options, dict) or set(options) - set(OPTIONS):
        raise ValidationError(f"options must be an object of {', '.join(OPTIONS)}")
    messages = raw.get("messages")
    if messages is None:
        raise ValidationError("messages: required")
    chat = ChatRequest(
        check_assistant(raw.get("assistant")), parse_messages(messages=messages), ChatOptions.parse(options)
    )
    return RequestRecord(
        request_id,
        chat,
        batch_id=_optional_str(raw, "batch_id"),
        custom_id=_optional_str(raw, "custom_id"),
        seq=_optional_int(raw, "seq", 1),
        callback_url=_callback_url(raw.get("callback")),
        caller=_optional_str(raw, "caller", 200),
        generation=_optional_int(raw, "generation", 0) or 0,
        dispatch=_optional_str(raw, "dispatch", 64),
    )


def decode(body: str) -> RequestRecord:
    """Read and check a message body (the same checks as every entrance, ``citeq.models``) -> the request as a
    queued record carrying the message's generation and dispatch token. An unknown version, bad JSON or a bad
    field raises citeq's ValidationError with the reason."""
    try:
        raw = loads(body, what="message body")
    except ValidationError as exc:
        raise ValidationError(f"message body is not JSON: {exc.reason}") from None
    if not isinstance(raw, dict):
        raise ValidationError("message body must be a JSON object")
    version = raw.get("v")
    if version != VERSION:
        raise ValidationError(f"unsupported message version {version!r}; this worker understands v={VERSION}")
    try:
        return _record(raw)
    except ValidationError as exc:
        raise ValidationError(f"invalid message: {exc.reason}") from None
