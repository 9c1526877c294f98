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
import re
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from citeq.errors import ValidationError as CiteqValidationError

VERSION = 1
# \Z, not $: "name\n" must not pass (a $ also matches before a final newline).
ASSISTANT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
# Characters SQS refuses in a body (its allowed set is #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF).
# JSON escapes the control characters, so what can still reach SQS raw is a surrogate or U+FFFE/U+FFFF; a lone
# surrogate cannot be encoded as UTF-8 at all, so DynamoDB cannot store it either (issue 11).
_CANNOT_TRAVEL = re.compile("[\ud800-\udfff\ufffe\uffff]")
MAX_DEPTH = 32


def _where(path: list[str]) -> str:
    return ".".join(path) or "the value"


def check_text(value: Any, *, field: str = "") -> None:
    """Raise citeq's ValidationError naming the field and character if any string (key or value) in ``value``
    cannot be sent to SQS or stored in DynamoDB; nesting deeper than MAX_DEPTH is refused too."""
    # Iterative, so hostile nesting cannot exhaust the stack.
    stack: list[tuple[Any, list[str]]] = [(value, [field] if field else [])]
    while stack:
        current, path = stack.pop()
        if len(path) > MAX_DEPTH + 1:
            raise CiteqValidationError(f"{_where(path[:3])}...: nested more than {MAX_DEPTH} levels deep")
        if isinstance(current, str):
            found = _CANNOT_TRAVEL.search(current)
            if found:
                raise CiteqValidationError(
                    f"{_where(path)} holds U+{ord(found.group()):04X} at character {found.start() + 1}, which "
                    "cannot be sent to SQS or stored in DynamoDB (a lone surrogate or a non-character)"
                )
        elif isinstance(current, dict):
            for key, item in current.items():
                stack.append((key, [*path, "(a key)"]))
                stack.append((item, [*path, str(key)]))
        elif isinstance(current, list | tuple):
            stack.extend((item, [*path, f"[{index}]"]) for index, item in enumerate(current))


def loads(text: str | bytes, *, what: str = "the body", max_depth: int = MAX_DEPTH) -> Any:
    """JSON text or UTF-8 bytes -> value; citeq's ValidationError (never RecursionError) for invalid JSON, bad
    UTF-8 or nesting past ``max_depth``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CiteqValidationError(f"{what} is not UTF-8 (byte {exc.start + 1})") from None
    if _depth_exceeds(text, max_depth):
        raise CiteqValidationError(f"{what} is nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CiteqValidationError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError as exc:
        raise CiteqValidationError(f"{what} is not valid JSON ({type(exc).__name__})") from None


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a scan, before the recursive parser runs)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"] = "user"
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message content must not be empty")
        return value


class Options(BaseModel):
    """Chat parameters; unset ones take the service's defaults."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    filter: dict[str, Any] | None = None


class Callback(BaseModel):
    """Where to POST the result when the request ends."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://[^\s/]+")


class RequestMessage(BaseModel):
    """One request on the queue."""

    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=200)
    batch_id: str | None = None
    custom_id: str | None = None
    seq: int | None = Field(default=None, ge=1)
    assistant: str
    messages: list[Message] = Field(min_length=1)
    options: Options = Field(default_factory=Options)
    callback: Callback | None = None
    generation: int = Field(default=0, ge=0)
    dispatch: str | None = Field(default=None, max_length=64)
    caller: str | None = Field(default=None, max_length=200)

    @field_validator("assistant")
    @classmethod
    def _assistant_name(cls, value: str) -> str:
        if not ASSISTANT_NAME.match(value):
            raise ValueError("assistant name must be 1-63 lowercase letters, digits or '-'")
        return value

    def body(self) -> str:
        """The JSON body sent to SQS (compact, unset fields left out)."""
        return self.model_dump_json(exclude_none=True)


def describe(error: pydantic.ValidationError) -> str:
    """A pydantic error as one readable line: ``field: reason; field: reason``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(body: str) -> RequestMessage:
    """Parse and validate a message body; unknown versions and bad fields raise citeq's ValidationError."""
    try:
        raw = loads(body, what="message body")
    except CiteqValidationError as exc:
        raise CiteqValidationError(f"message body is not JSON: {exc.reason}") from None
    if not isinstance(raw, dict):
        raise CiteqValidationError("message body must be a JSON object")
    version = raw.get("v")
    if version != VERSION:
        raise CiteqValidationError(f"unsupported message version {version!r}; this worker understands v={VERSION}")
    try:
        check_text(raw)
        return RequestMessage.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise CiteqValidationError(f"invalid message: {describe(exc)}") from None
    except CiteqValidationError as exc:
        raise CiteqValidationError(f"invalid message: {exc.reason}") from None
