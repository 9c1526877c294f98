"""citeq's models: the request (one shape from every entrance to the assistant's JSON), the records the store
returns, and the answer object, citeq's common currency.

**The request** (issue 13). ``ChatRequest`` is what the assistant is asked: an assistant name, messages and
``ChatOptions``; ``ChatRequest.body`` builds the JSON of ``POST .../chat/completions`` (shared/reference §2).
``Request`` adds what citeq keeps around it (ids, the caller's ``custom_id`` and ``metadata``, a callback URL,
who sent it); ``Request.parse`` is the one validator every entrance uses (a batch line, ``POST /v1/requests``,
a webhook), and ``citeq.messages`` reads and writes the same model as the queue body. ``RequestRecord`` is a
stored request with its state and result. Adding a chat option is a field of ``ChatOptions`` and a row of
``OPTIONS``: the batch columns, the validation, the queue body, the store and the JSON body follow from them.

**The answer** is the assistant's standard-chat shape with structured citations.

JSON form (``Answer.to_dict``)::

    {"id", "model", "finish_reason",
     "message": {"role", "content": <answer text with markers removed>},
     "citations": [{"position", "references": [{"file": {"name", "id", "signed_url", "url_expires_at"},
                                                "pages": [...]}]}],
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
     "raw_content": <content as received>}

A marker whose number has no entry in the References list is kept as a reference with ``"file": null``
and ``"missing_reference": <n>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict

from citeq.errors import ValidationError
from citeq.text import check_text


class UsageDict(TypedDict):
    """Token counts as the service reports them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage_from(value: Any) -> UsageDict | None:
    """Token counts from a wire payload; None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    try:
        return UsageDict(
            prompt_tokens=int(value["prompt_tokens"]),
            completion_tokens=int(value["completion_tokens"]),
            total_tokens=int(value["total_tokens"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class FileRef:
    """A cited file, as far as the References list tells it."""

    name: str
    signed_url: str | None = None
    id: str | None = None
    url_expires_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "id": self.id, "signed_url": self.signed_url, "url_expires_at": self.url_expires_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRef:
        """Inverse of ``to_dict``."""
        return cls(data["name"], data.get("signed_url"), data.get("id"), data.get("url_expires_at"))


@dataclass(frozen=True, slots=True)
class Reference:
    """One file (and pages) supporting a citation; ``file`` is None when the marker's number was not listed."""

    file: FileRef | None
    pages: tuple[int, ...] = ()
    missing_reference: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        data: dict[str, Any] = {"file": self.file.to_dict() if self.file else None, "pages": list(self.pages)}
        if self.missing_reference is not None:
            data["missing_reference"] = self.missing_reference
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        """Inverse of ``to_dict``."""
        file = FileRef.from_dict(data["file"]) if data.get("file") else None
        return cls(file, tuple(data.get("pages") or ()), data.get("missing_reference"))


@dataclass(frozen=True, slots=True)
class Citation:
    """A position in ``message.content`` and the references supporting the text just before it."""

    position: int
    references: tuple[Reference, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"position": self.position, "references": [r.to_dict() for r in self.references]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        """Inverse of ``to_dict``."""
        return cls(int(data["position"]), tuple(Reference.from_dict(r) for r in data["references"]))


@dataclass(frozen=True)
class ParsedContent:
    """What the citation parser makes of one content string."""

    text: str
    citations: tuple[Citation, ...] = ()
    files: tuple[FileRef, ...] = ()


@dataclass(frozen=True)
class Answer:
    """A cited answer."""

    id: str
    model: str
    content: str
    citations: tuple[Citation, ...] = ()
    usage: UsageDict | None = None
    finish_reason: str | None = "stop"
    raw_content: str = ""
    role: str = "assistant"
    files: tuple[FileRef, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The standard-chat-shaped JSON form shared by every store, export, response and callback."""
        return {
            "id": self.id,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "message": {"role": self.role, "content": self.content},
            "citations": [c.to_dict() for c in self.citations],
            "usage": dict(self.usage) if self.usage else None,
            "raw_content": self.raw_content,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """Inverse of ``to_dict``."""
        usage = data.get("usage")
        citations = tuple(Citation.from_dict(c) for c in data.get("citations") or ())
        files: dict[str, FileRef] = {}
        for citation in citations:
            for ref in citation.references:
                if ref.file is not None:
                    files.setdefault(ref.file.name, ref.file)
        return cls(
            id=data["id"],
            model=data["model"],
            content=data["message"]["content"],
            citations=citations,
            usage=usage_from(usage),
            finish_reason=data.get("finish_reason"),
            raw_content=data.get("raw_content", ""),
            role=data["message"].get("role", "assistant"),
            files=tuple(files.values()),
        )


# ---------------------------------------------------------------------------------------------- the request
# \Z, not $: "name\n" must not pass (a $ also matches before a final newline).
ASSISTANT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
# The service takes exactly these roles (pinecone 10.2.0's Message docstring; shared/reference §2, issue 12).
ROLES = ("user", "assistant")
# A question is stored with its answer in one 400 KB DynamoDB item, and sent in one SQS message.
MAX_QUESTION_BYTES = 200_000
# Everything a request stores besides its answer (question, metadata, options, ids, callback): the answer gets
# the rest of the item (issue 11: a line with 420 KB of metadata must fail here, not in batch_write_item).
MAX_INPUT_BYTES = 200_000
MAX_CUSTOM_ID = 256
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def check_assistant(name: Any) -> str:
    """``name`` if it is a valid assistant name (1-63 lowercase letters, digits or '-'), else ValidationError."""
    if not isinstance(name, str) or not ASSISTANT_NAME.match(name):
        raise ValidationError(f"assistant name {name!r} is not valid (1-63 lowercase letters, digits or '-')")
    return name


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: ``role`` is user or assistant."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        """JSON form ``{"role", "content"}``."""
        return {"role": self.role, "content": self.content}


def parse_messages(question: Any = None, messages: Any = None) -> tuple[Message, ...]:
    """Exactly one of a question (a non-empty string) or a list of ``{"role", "content"}`` objects -> messages;
    ValidationError naming what is wrong. The conversation needs a user message and may not exceed
    MAX_QUESTION_BYTES as JSON."""
    if (question is None) == (messages is None):
        raise ValidationError("give exactly one of question or messages")
    if question is not None:
        if not isinstance(question, str) or not question.strip():
            raise ValidationError("question must be a non-empty string")
        parsed: tuple[Message, ...] = (Message("user", question),)
    else:
        if not isinstance(messages, list | tuple):
            raise ValidationError("messages must be a list of {role, content} objects")
        if not messages:
            raise ValidationError("messages must be a non-empty list")
        items = []
        for message in messages:
            if not isinstance(message, Mapping):
                raise ValidationError("messages must be a list of {role, content} objects")
            if not isinstance(message.get("content"), str):
                raise ValidationError("every message needs non-empty string content")
            if not message["content"].strip():
                raise ValidationError("every message needs non-empty string content")
            role = message.get("role", "user")
            if set(message) - {"role", "content"}:
                raise ValidationError("messages hold only role (user or assistant) and content")
            if role not in ROLES:
                raise ValidationError(f"message role must be user or assistant, got {role!r}")
            items.append(Message(role, message["content"]))
        if not any(m.role == "user" for m in items):
            raise ValidationError("messages need at least one user message")
        parsed = tuple(items)
    # UTF-8 as is, as the queue body and the store carry it (\u-escaped, a CJK question counted twice its size).
    size = len(json.dumps([m.to_dict() for m in parsed], ensure_ascii=False).encode())
    if size > MAX_QUESTION_BYTES:
        raise ValidationError(
            f"question is {size:,} bytes; the limit is {MAX_QUESTION_BYTES:,} (it travels in one SQS message and is "
            "stored with its answer in one 400 KB DynamoDB item)"
        )
    return parsed


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("model must be a non-empty string")
    return value


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ValidationError("temperature must be a number from 0 to 2")
    return float(value)


def _filter(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError("filter must be a JSON object")
    check_text(value, field="filter")  # a NaN the caller's own json.loads let in would never be sent
    return value


# context_options' fields: (least, most) for the integers, None for the booleans (shared/reference §5: top_k
# default 16 max 64; snippet_size in tokens, default 2048, 512-8192; multimodal and include_binary_content
# default true). A top_k below 1 would retrieve nothing: refused as the SDK's own range check would.
_CONTEXT_FIELDS: dict[str, tuple[int, int] | None] = {
    "top_k": (1, 64),
    "snippet_size": (512, 8192),
    "multimodal": None,
    "include_binary_content": None,
}


def _context_options(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValidationError(f"context_options must be a JSON object of {', '.join(_CONTEXT_FIELDS)}")
    for name, item in value.items():
        if name not in _CONTEXT_FIELDS:
            raise ValidationError(f"context_options has an unknown field {name!r}")
        bounds = _CONTEXT_FIELDS[name]
        if bounds is None and not isinstance(item, bool):
            raise ValidationError(f"context_options.{name} must be true or false")
        if bounds is not None and (
            isinstance(item, bool) or not isinstance(item, int) or not bounds[0] <= item <= bounds[1]
        ):
            raise ValidationError(f"context_options.{name} must be an integer from {bounds[0]} to {bounds[1]}")
    return value


@dataclass(frozen=True)
class Option:
    """How one chat option is checked (``check`` returns the clean value or raises ValidationError), how a CSV
    cell spells it (``cell``: ``text`` as is, ``number`` parsed as a float, ``json`` parsed as JSON), and whether
    only the standard chat takes it (``standard_only``: the request then goes to that endpoint)."""

    check: Callable[[Any], Any]
    cell: Literal["text", "number", "json"] = "text"
    standard_only: bool = False


# The chat's optional parameters (shared/reference §2 and §5): each is sent only when set, so the service's
# defaults apply otherwise. The keys are ChatOptions' fields.
OPTIONS: dict[str, Option] = {
    "model": Option(_model),
    "temperature": Option(_temperature, "number"),
    "filter": Option(_filter, "json"),
    "context_options": Option(_context_options, "json", standard_only=True),
}


@dataclass(frozen=True)
class ChatOptions:
    """Chat parameters; None takes the service's default. ``model`` a model name (service default ``gpt-4o``),
    ``temperature`` 0-2 (2025-04+, ignored by models without it), ``filter`` a metadata filter on the files,
    ``context_options`` how much context is retrieved: ``{"top_k": 1-64 snippets (default 16), "snippet_size":
    512-8192 tokens (default 2048), "multimodal": bool, "include_binary_content": bool}``. The retrieved context
    is most of a prompt's tokens (9k-26k a call), so a smaller top_k or snippet_size answers more questions
    within a token-per-minute limit (README, "Sizing and pacing")."""

    model: str | None = None
    temperature: float | None = None
    filter: dict[str, Any] | None = None
    context_options: dict[str, Any] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ChatOptions:
        """The options named in ``raw`` (other keys are ignored; a None value means unset), each checked."""
        return cls(**{name: option.check(raw[name]) for name, option in OPTIONS.items() if raw.get(name) is not None})

    @classmethod
    def stored(cls, raw: Mapping[str, Any] | None) -> ChatOptions:
        """Options read back from the store (checked when written): unknown keys are dropped, nothing is checked."""
        return cls(**{name: raw[name] for name in OPTIONS if raw and raw.get(name) is not None})

    def to_dict(self) -> dict[str, Any]:
        """The options that are set, by name (their JSON form, as the endpoint takes them)."""
        return {name: getattr(self, name) for name in OPTIONS if getattr(self, name) is not None}

    @property
    def standard_only(self) -> bool:
        """Whether an option only the standard chat takes is set."""
        return any(OPTIONS[name].standard_only for name in self.to_dict())


if set(OPTIONS) != {f.name for f in fields(ChatOptions)}:  # pragma: no cover - a mistake in this module
    raise AssertionError("OPTIONS and ChatOptions must name the same options")


@dataclass(frozen=True)
class ChatRequest:
    """What to ask the assistant: its name, the messages, and the options."""

    assistant: str
    messages: tuple[Message, ...]
    options: ChatOptions = field(default_factory=ChatOptions)

    # The fields a caller may send for a chat request (besides citeq's own, see Request.FIELDS).
    FIELDS = frozenset({"assistant", "question", "messages", *OPTIONS})

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, default_assistant: str | None = None) -> ChatRequest:
        """``{"assistant"?, "question" | "messages", <options>...}`` -> a checked request (other keys ignored);
        ValidationError with the reason. ``default_assistant`` (CITEQ_ASSISTANT) applies when none is given."""
        messages = parse_messages(raw.get("question"), raw.get("messages"))
        # Only an absent (or null) assistant takes the default: "" or false is a mistake, not "the default".
        assistant = raw.get("assistant")
        if assistant is None:
            assistant = default_assistant
        if assistant is None:
            raise ValidationError("no assistant: give one or set CITEQ_ASSISTANT")
        return cls(check_assistant(assistant), messages, ChatOptions.parse(raw))

    @classmethod
    def ask(cls, question: str, assistant: str, **options: Any) -> ChatRequest:
        """One question with options by keyword (``model=``, ``temperature=``, ``filter=``), checked."""
        return cls.parse({"question": question, "assistant": assistant, **options})

    @property
    def question(self) -> str:
        """The last user message."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""

    @property
    def endpoint(self) -> str:
        """The path under ``{host}/assistant/chat/{assistant}``: ``/chat/completions`` (OpenAI-compatible, inline
        citation markers; shared/reference §2), or ``""`` (the standard chat, structured citations; §5) when an
        option only that endpoint takes is set."""
        return "" if self.options.standard_only else "/chat/completions"

    def body(self, *, stream: bool) -> dict[str, Any]:
        """The JSON body for ``endpoint`` (both take the same fields; the standard chat takes more): messages,
        ``stream``, and the options that are set."""
        return {"messages": [m.to_dict() for m in self.messages], "stream": stream, **self.options.to_dict()}


@dataclass(frozen=True)
class Request:
    """A chat request as citeq keeps it. ``request_id`` is empty until the request is named (a batch line gets
    its id when its batch is bound); ``batch_id``/``seq`` (1-based input order) place a batch's requests;
    ``caller`` is who sent it (``key:<16 hex>`` for a stream API key, ``webhook:<sender>``): it scopes reads
    and picks the secret that signs the callback (issue 11)."""

    request_id: str
    chat: ChatRequest
    batch_id: str | None = None
    custom_id: str | None = None
    seq: int | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    caller: str | None = None

    # Every field a caller may send (a batch line, POST /v1/requests, a webhook).
    FIELDS = frozenset({*ChatRequest.FIELDS, "custom_id", "metadata", "callback_url"})

    @classmethod
    def parse(
        cls,
        raw: Any,
        *,
        default_assistant: str | None,
        request_id: str = "",
        custom_id_required: bool = True,
        callback_allow_hosts: Sequence[str] = (),
        callback_resolve: Callable[..., Any] | None = None,
    ) -> Request:
        """The one validator of every entrance: a JSON object with the fields in ``FIELDS`` -> a Request, or
        ValidationError with the reason (nothing is written before this passes). Text that SQS or DynamoDB
        would refuse, unknown fields, and input over MAX_INPUT_BYTES are refused; a callback URL naming an
        internal address is refused, and with ``callback_resolve`` (``socket.getaddrinfo``'s shape) so is a
        host resolving to one."""
        if not isinstance(raw, dict):
            raise ValidationError("a request must be a JSON object")
        unknown = set(raw) - cls.FIELDS
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        # Before anything else looks at the strings: a lone surrogate makes json.dumps(ensure_ascii=False) and
        # boto3 raise deep inside a submission, and SQS refuses U+FFFE half way through one (issue 11).
        check_text(raw)
        custom_id = raw.get("custom_id")
        if custom_id is not None or custom_id_required:
            if not isinstance(custom_id, str) or not custom_id.strip():
                missing = custom_id is None and custom_id_required
                wanted = "is required (a non-empty string)" if missing else "must be a non-empty string"
                raise ValidationError(f"custom_id {wanted}")
            if len(custom_id) > MAX_CUSTOM_ID:
                raise ValidationError(f"custom_id is longer than {MAX_CUSTOM_ID} characters")
        chat = ChatRequest.parse(raw, default_assistant=default_assistant)
        metadata = raw.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationError("metadata must be a JSON object")
        callback_url = raw.get("callback_url")
        if callback_url is not None:
            if not isinstance(callback_url, str):
                raise ValidationError("callback_url must be a string")
            # Imported here: callbacks reads the store, which reads these models.
            from citeq.callbacks import UnsafeURL, check_url_at_intake

            try:
                # The same parser the delivery connects with; literal internal addresses are refused here (400).
                check_url_at_intake(callback_url, callback_allow_hosts, callback_resolve)
            except UnsafeURL as exc:
                raise ValidationError(f"callback_url: {exc}") from None
        request = cls(request_id, chat, custom_id=custom_id, metadata=metadata, callback_url=callback_url)
        size = request.input_bytes()
        if size > MAX_INPUT_BYTES:
            raise ValidationError(
                f"the request (question, metadata and options) is {size:,} bytes; the limit is {MAX_INPUT_BYTES:,} "
                "(it is stored with its answer in one 400 KB DynamoDB item)"
            )
        return request

    @property
    def assistant(self) -> str:
        """The assistant asked."""
        return self.chat.assistant

    @property
    def question(self) -> str:
        """The last user message."""
        return self.chat.question

    def input_json(self) -> list[Any]:
        """What the caller asked, as JSON values (the same input gives the same list)."""
        return [
            self.custom_id,
            self.chat.assistant,
            [m.to_dict() for m in self.chat.messages],
            self.chat.options.to_dict(),
            self.metadata,
            self.callback_url,
        ]

    def input_bytes(self) -> int:
        """Bytes the request's input takes in its DynamoDB item and SQS message (UTF-8 JSON, as stored)."""
        return len(json.dumps(self.input_json(), separators=(",", ":"), ensure_ascii=False).encode())


@dataclass(frozen=True)
class RequestRecord(Request):
    """A stored request, its state (see ``citeq.store`` for the state machine) and, once ended, its result.

    Times: ``*_at`` are RFC 3339 strings; ``lease_until`` and ``not_before`` epoch seconds; ``latency_ms`` the
    answered attempt's duration. ``answer`` is ``Answer.to_dict()``'s shape; ``error`` ``{"type", "message",
    "http_status"}``."""

    status: str = "queued"
    attempts: int = 0
    lease: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    latency_ms: int | None = None
    answer: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0
    lease_until: float | None = None
    dispatch: str | None = None
    not_before: float | None = None
    wait_reason: str | None = None
    failures: int = 0
    deferrals: int = 0
    callback_done: int | None = None

    def lease_live(self, now: float) -> bool:
        """Whether a running request's attempt may still be at work (its lease has not ended)."""
        return self.status == "running" and self.lease_until is not None and self.lease_until > now

    def result(self) -> dict[str, Any]:
        """The export / API shape of one result."""
        return {
            "custom_id": self.custom_id,
            "request_id": self.request_id,
            "status": self.status,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "answer": self.answer,
        }


@dataclass(frozen=True)
class Unfinished:
    """What ``citeq batch status`` reads of a request not yet ended: whose budget it waits on, and until when."""

    status: str
    assistant: str
    not_before: float | None = None
    wait_reason: str | None = None


@dataclass(frozen=True)
class BatchInfo:
    """A batch's record: ``counts`` per status (always summing to ``total``), ``state`` submitting or submitted."""

    batch_id: str
    total: int
    counts: dict[str, int]
    state: str
    created_at: str
    created_ts: float
    source: str | None = None
    idempotency_key: str | None = None

    @property
    def finished(self) -> int:
        """Requests in a terminal status."""
        return sum(self.counts[s] for s in TERMINAL)

    @property
    def done(self) -> bool:
        """Whether every request has ended."""
        return self.finished >= self.total
