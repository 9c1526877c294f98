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
     "dispatch": "9f2c..." | absent}           # the stored request's token for this message: a claim must
                                               # carry the current one, so a superseded message does nothing

A body with another ``v`` is rejected with a clear reason (and recorded, not retried).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from citeq.errors import ValidationError as CiteqValidationError

VERSION = 1
ASSISTANT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


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

    @field_validator("assistant")
    @classmethod
    def _assistant_name(cls, value: str) -> str:
        if not ASSISTANT_NAME.match(value):
            raise ValueError("assistant name must be 1-63 lowercase letters, digits or '-'")
        return value

    def body(self) -> str:
        """The JSON body sent to SQS (compact, unset fields left out)."""
        return self.model_dump_json(exclude_none=True)


def describe(error: ValidationError) -> str:
    """A pydantic error as one readable line: ``field: reason; field: reason``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(body: str) -> RequestMessage:
    """Parse and validate a message body; unknown versions and bad fields raise citeq's ValidationError."""
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise CiteqValidationError(f"message body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CiteqValidationError("message body must be a JSON object")
    version = raw.get("v")
    if version != VERSION:
        raise CiteqValidationError(f"unsupported message version {version!r}; this worker understands v={VERSION}")
    try:
        return RequestMessage.model_validate(raw)
    except ValidationError as exc:
        raise CiteqValidationError(f"invalid message: {describe(exc)}") from None
