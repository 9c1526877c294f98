"""The assistant client: ``POST {host}/assistant/chat/{assistant}/chat/completions``, default and streamed.

One ``requests.Session`` per client (build one client per process or Lambda container), an explicit
(connect, read) timeout on every call, retries per ``citeq.retry``, an optional overall deadline, and every
``requests`` error translated to a ``citeq.errors`` error here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import requests

from citeq import __version__
from citeq.citations import Event, IncrementalParser, parse_content
from citeq.config import Settings
from citeq.errors import (
    APIStatusError,
    CiteqError,
    ConfigurationError,
    ConnectionFailed,
    DeadlineExceeded,
    MalformedResponse,
    StreamBroken,
    Timeout,
    TransportError,
    TruncatedResponse,
    ValidationError,
    status_error,
)
from citeq.models import (
    ASSISTANT_NAME,
    OPTIONS,
    Answer,
    ChatRequest,
    Citation,
    FileRef,
    ParsedContent,
    Reference,
    UsageDict,
    usage_from,
)
from citeq.retry import RetryPolicy, retry_delay, should_retry
from citeq.sse import SSEDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")
# Bytes of an error body kept for the message.
MAX_ERROR_BODY = 4096
# An attempt needs at least this long before the deadline to be worth starting.
MIN_ATTEMPT_SECONDS = 2.0
# Discovered data-plane hosts kept per client (one per assistant name seen).
MAX_CACHED_HOSTS = 256


class StreamChunk(NamedTuple):
    """One decoded chunk of an OpenAI-compatible stream (a tuple: thousands are made per answer)."""

    id: str | None
    model: str | None
    role: str | None = None
    content: str | None = None
    finish_reason: str | None = None
    usage: UsageDict | None = None
    # What a proxy relays: the event's data as received, except that a null ``delta`` becomes ``{}`` (the
    # service has sent ``"delta": null`` on the finish chunk, which breaks ``chunk.choices[0].delta.content``
    # in openai-SDK clients; issue 12).
    raw: str | None = None


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def error_from_response(response: requests.Response, now: float | None = None) -> APIStatusError:
    """The citeq error for an error response; the body is read as JSON even when served as text/plain."""
    raw = response.content[:MAX_ERROR_BODY].decode("utf-8", errors="replace")
    code: str | None = None
    message = raw.strip() or response.reason or "no message"
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            message = str(error.get("message") or message)
        elif isinstance(error, str):
            message = error
        else:
            for key in ("message", "detail", "description"):
                if body.get(key):
                    message = str(body[key])
                    break
    request_id = response.headers.get("x-pinecone-request-id") or response.headers.get("x-request-id")
    retry_after = _retry_after(response.headers.get("retry-after"), time.time() if now is None else now)
    return status_error(response.status_code, message, code=code, request_id=request_id, retry_after=retry_after)


def _session(pool: int = 64) -> requests.Session:
    """A Session whose pool holds a connection per concurrent caller (the worker answers records in parallel)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _translate(exc: requests.RequestException, what: str) -> TransportError:
    """The citeq error for a ``requests`` failure; raise it ``from exc``. The message names only the exception's
    type; the chained cause may show the URL, never the key (it travels in a header, which requests leaves out)."""
    if isinstance(exc, requests.Timeout):
        return Timeout(f"{what}: timed out ({type(exc).__name__})")
    return ConnectionFailed(f"{what}: connection failed ({type(exc).__name__})")


class AssistantClient:
    """Talks to one Pinecone project's assistants. Thread-safe for concurrent calls."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._key = settings.resolve_api_key()
        self.session = session or _session()
        self.policy = policy or RetryPolicy(max_attempts=settings.max_attempts)
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self._hosts: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"AssistantClient(pinecone_host={self.settings.pinecone_host!r}, api_version={self.settings.api_version!r})"
        )

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def _headers(self) -> dict[str, str]:
        return {
            "Api-Key": self._key.get(),
            "X-Pinecone-Api-Version": self.settings.api_version,
            "User-Agent": f"citeq/{__version__}",
        }

    # ------------------------------------------------------------------ attempts
    def _timeout(self, read: float, deadline: float | None) -> tuple[float, float]:
        connect = self.settings.connect_timeout
        if deadline is None:
            return connect, read
        remaining = deadline - self.clock()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise DeadlineExceeded(f"{remaining:.1f}s left before the deadline; not starting another attempt")
        return min(connect, remaining), min(read, remaining)

    def _retrying(self, attempt: Callable[[int], T], deadline: float | None, what: str) -> T:
        number = 1
        while True:
            try:
                return attempt(number)
            except CiteqError as exc:
                if not should_retry(exc, number, self.policy):
                    raise
                delay = retry_delay(exc, number, self.policy, self.rng)
                if deadline is not None and self.clock() + delay + MIN_ATTEMPT_SECONDS > deadline:
                    raise
                log.info("%s: attempt %d failed (%s); retrying in %.2fs", what, number, type(exc).__name__, delay)
                self.sleep(delay)
                number += 1

    def _request(
        self, method: str, url: str, *, body: Any = None, stream: bool = False, read: float, deadline: float | None
    ) -> requests.Response:
        timeout = self._timeout(read, deadline)
        try:
            response = self.session.request(
                method, url, json=body, headers=self._headers(), timeout=timeout, stream=stream
            )
        except requests.RequestException as exc:
            raise _translate(exc, f"{method} {url}") from exc
        if response.status_code >= 400:
            try:
                raise error_from_response(response)
            finally:
                response.close()
        return response

    # ------------------------------------------------------------------ discovery
    def host_for(self, assistant: str, deadline: float | None = None) -> str:
        """The assistant's data-plane host: ``CITEQ_ASSISTANT_HOST``, else discovered once and cached."""
        if self.settings.assistant_host:
            return self.settings.assistant_host
        if not ASSISTANT_NAME.match(assistant):
            # Before anything goes upstream: a name like '..' or 'a/b' must not become a path (issue 11).
            raise ValidationError(f"assistant name {assistant[:80]!r} is not valid (1-63 lowercase letters, digits, -)")
        host = self._hosts.get(assistant)
        if host is None:
            url = f"{self.settings.pinecone_host}/assistant/assistants/{quote(assistant, safe='')}"

            def describe(_: int) -> str:
                response = self._request("GET", url, read=30.0, deadline=deadline)
                try:
                    found = response.json().get("host")
                except ValueError as exc:
                    raise TruncatedResponse(f"describe assistant {assistant!r}: response is not JSON") from exc
                except AttributeError as exc:
                    raise MalformedResponse(f"describe assistant {assistant!r}: response is not an object") from exc
                if not isinstance(found, str) or not found:
                    raise ConfigurationError(f"assistant {assistant!r} has no data-plane host yet")
                return found if "://" in found else f"https://{found}"

            host = self._retrying(describe, deadline, f"describe {assistant}").rstrip("/")
            if len(self._hosts) >= MAX_CACHED_HOSTS:
                # Bounded: the oldest entry goes (dicts keep insertion order), so no caller can grow it without end.
                self._hosts.pop(next(iter(self._hosts)), None)
            self._hosts[assistant] = host
        return host

    def _chat_url(self, request: ChatRequest, deadline: float | None) -> str:
        name = quote(request.assistant, safe="")
        return f"{self.host_for(request.assistant, deadline)}/assistant/chat/{name}{request.endpoint}"

    def _request_for(self, request: ChatRequest | str) -> ChatRequest:
        if isinstance(request, ChatRequest):
            return request
        if not self.settings.assistant:
            raise ConfigurationError("no assistant given and CITEQ_ASSISTANT is not set")
        return ChatRequest.ask(request, self.settings.assistant)

    # ------------------------------------------------------------------ chat
    def chat(self, request: ChatRequest | str, *, deadline: float | None = None) -> Answer:
        """A default (non-streamed) answer, parsed into text and structured citations. ``request`` is a checked
        ``ChatRequest`` (``ChatRequest.parse``/``ask``), or a question for the default assistant (CITEQ_ASSISTANT);
        ``deadline`` is a ``monotonic`` instant no attempt may outlive."""
        request = self._request_for(request)
        url = self._chat_url(request, deadline)
        read_answer = answer_from_chat if request.options.standard_only else answer_from_completion

        def attempt(_: int) -> Answer:
            response = self._request(
                "POST", url, body=request.body(stream=False), read=self.settings.read_timeout, deadline=deadline
            )
            try:
                payload = response.json()
            except ValueError as exc:
                raise TruncatedResponse("chat completion: response body was cut off or is not JSON") from exc
            except RecursionError as exc:
                # Complete JSON, but nested past what the parser can read: no answer has that shape (before, an
                # unexpected error the worker re-asked until its receives ran out, and a 500 from the relay).
                raise MalformedResponse("chat completion: response body is nested too deeply to read") from exc
            return read_answer(payload)

        return self._retrying(attempt, deadline, f"chat {request.assistant}")

    def stream(
        self,
        request: ChatRequest | str,
        *,
        deadline: float | None = None,
        keep_text: bool = True,
        reopen: bool = True,
    ) -> ChatStream:
        """A streamed answer; use as a context manager and iterate chunks or ``events()``.

        With ``reopen`` (the default) a stream that breaks before its first content byte is opened again, so
        chunks before the first content are held until it comes; a relay passes ``reopen=False`` to forward
        every chunk the moment it arrives.
        """
        request = self._request_for(request)
        if request.options.standard_only:
            standard = ", ".join(name for name, option in OPTIONS.items() if option.standard_only)
            raise ValidationError(
                f"{standard} need a default (non-streamed) answer: streams use the "
                "OpenAI-compatible endpoint, which does not take them"
            )
        url = self._chat_url(request, deadline)

        def open_stream() -> requests.Response:
            return self._retrying(
                lambda _: self._request(
                    "POST",
                    url,
                    body=request.body(stream=True),
                    stream=True,
                    read=self.settings.stream_read_timeout,
                    deadline=deadline,
                ),
                deadline,
                f"stream {request.assistant}",
            )

        return ChatStream(open_stream, keep_text=keep_text, reopens=self.policy.max_attempts - 1 if reopen else 0)


def answer_from_completion(payload: Any) -> Answer:
    """A default chat completion body (decoded JSON) -> Answer; MalformedResponse when it has no
    ``choices[0].message.content``."""
    try:
        choice = payload["choices"][0]
        content = choice["message"]["content"] or ""
        parsed = parse_content(content)
        return Answer(
            id=str(payload.get("id", "")),
            model=str(payload.get("model", "")),
            content=parsed.text,
            citations=parsed.citations,
            usage=usage_from(payload.get("usage")),
            finish_reason=choice.get("finish_reason"),
            raw_content=content,
            files=parsed.files,
        )
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"chat completion has an unexpected shape ({type(exc).__name__}: {exc})") from exc


def _typed(value: Any, kind: type[T], what: str) -> T:
    """``value`` if it is a ``kind`` (never a bool for int), else TypeError naming ``what``: a 200 whose fields
    have other types is malformed, not coerced (``int(1.7)`` or ``str(None)`` would make up an answer)."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{what} is {type(value).__name__}, not {kind.__name__}")
    return value


def answer_from_chat(payload: Any) -> Answer:
    """A standard chat response (``ChatModel``: ``{"id", "model", "finish_reason", "message": {"role",
    "content"}, "usage", "citations": [{"position", "references": [{"file": {...}, "pages"}]}]}``,
    shared/reference §5) -> Answer, or MalformedResponse. Its content has no markers and its citations are
    structured already, with positions in that content."""
    try:
        content = _typed(payload["message"]["content"] or "", str, "message.content")
        citations = []
        files: dict[str, FileRef] = {}
        for citation in payload.get("citations") or ():
            references = []
            for ref in citation["references"]:
                data = ref.get("file")
                file = None
                if isinstance(data, dict):
                    name = _typed(data["name"], str, "file.name")
                    file = files.setdefault(
                        name, FileRef(name, data.get("signed_url"), data.get("id"), data.get("url_expires_at"))
                    )
                references.append(Reference(file, tuple(_typed(p, int, "pages") for p in ref.get("pages") or ())))
            # A position is an offset into this content, as the completion's markers give it (citeq.citations).
            position = _typed(citation["position"], int, "position")
            if not 0 <= position <= len(content):
                raise ValueError(f"position {position} is outside the content ({len(content)} characters)")
            citations.append(Citation(position, tuple(references)))
        return Answer(
            id=str(payload.get("id", "")),
            model=str(payload.get("model", "")),
            content=content,
            citations=tuple(citations),
            usage=usage_from(payload.get("usage")),
            finish_reason=payload.get("finish_reason"),
            raw_content=content,
            files=tuple(files.values()),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponse(f"chat answer has an unexpected shape ({type(exc).__name__}: {exc})") from exc


# What an error object in a stream (``data: {"error": {...}}``) says when it carries no status of its own.
STREAM_ERROR_STATUS = 500


def error_event(data: str, event: str = "message") -> APIStatusError | None:
    """The service's error sent as a stream event (``{"error": {"code", "message"}, "status"}`` as data, or an
    ``event: error``) -> the matching citeq error carrying its message and code; None for any other event."""
    try:
        payload: Any = json.loads(data)
    except (ValueError, RecursionError):
        payload = None
    if isinstance(payload, dict) and "error" in payload and not payload.get("choices"):
        error = payload["error"]
        detail = error if isinstance(error, dict) else {"message": error}
        status = payload.get("status", detail.get("status"))
        code = detail.get("code") if isinstance(detail.get("code"), str) else None
        message = str(detail.get("message") or code or "the service reported an error in the stream")[:MAX_ERROR_BODY]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            status = STREAM_ERROR_STATUS
        return status_error(status, message, code=code)
    if event == "error":
        return status_error(STREAM_ERROR_STATUS, data[:MAX_ERROR_BODY] or "the service reported an error in the stream")
    return None


def parse_chunk(data: str) -> StreamChunk | None:
    """One ``data:`` payload -> a typed chunk; None for a payload that is not a JSON chunk (logged, skipped).

    Unknown fields are ignored; the usage chunk arrives with ``choices: []``.
    """
    try:
        payload = json.loads(data)
        choices = payload.get("choices") or []
        choice = choices[0] if choices else {}
        delta = choice.get("delta") or {}
        if any(c.get("delta") is None for c in choices):
            for each in choices:
                each["delta"] = each.get("delta") or {}
            data = json.dumps(payload)
        return StreamChunk(
            id=payload.get("id"),
            model=payload.get("model"),
            role=delta.get("role") or None,
            content=delta.get("content"),
            finish_reason=choice.get("finish_reason"),
            usage=usage_from(payload.get("usage")),
            raw=data,
        )
    except (ValueError, AttributeError, TypeError, IndexError):
        log.debug("skipping a stream event that is not a JSON chunk")
        return None


class ChatStream:
    """A streamed answer. Chunks are yielded as they arrive; the connection always closes.

    A stream that breaks before its first content byte is reopened (up to ``reopens`` times); after that it
    is never retried, and ``StreamBroken`` carries the content received so far.
    """

    def __init__(self, open_stream: Callable[[], requests.Response], *, keep_text: bool, reopens: int) -> None:
        self._open = open_stream
        self._response: requests.Response | None = open_stream()
        self._reopens = reopens
        self.parser = IncrementalParser(keep_text=keep_text)
        self.id: str | None = None
        self.model: str | None = None
        self.usage: UsageDict | None = None
        self.finish_reason: str | None = None
        self.chunks = 0
        self._received: list[str] = []
        self._keep_text = keep_text
        self._done = False
        self._events: list[Event] = []
        self._parsed: ParsedContent | None = None

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._response is not None:
            self._response.close()
            self._response = None

    def _raw_chunks(self, response: requests.Response) -> Iterator[StreamChunk]:
        decoder = SSEDecoder()
        try:
            for data in response.iter_content(chunk_size=None):
                for event in decoder.feed(data):
                    if event.data.strip() == "[DONE]":
                        return
                    # An error object is the service's answer, not a broken connection: raised as its status error
                    # (so it is neither reopened before content nor reported as StreamBroken after it; issue 11).
                    if (failure := error_event(event.data, event.event)) is not None:
                        raise failure
                    if (chunk := parse_chunk(event.data)) is not None:
                        yield chunk
            for event in decoder.close_events():
                if event.data.strip() != "[DONE]" and (chunk := parse_chunk(event.data)) is not None:
                    yield chunk
        except requests.RequestException as exc:
            raise _translate(exc, "stream") from exc

    def __iter__(self) -> Iterator[StreamChunk]:
        started = False
        held: list[StreamChunk] = []
        try:
            while self._response is not None:
                try:
                    for chunk in self._raw_chunks(self._response):
                        self._note(chunk)
                        if not started and not chunk.content and self._reopens > 0:
                            held.append(chunk)  # a reopen would resend these: hold them until content arrives
                            continue
                        started = True
                        yield from held
                        held.clear()
                        yield chunk
                    if self.finish_reason is None and self.usage is None:
                        raise ConnectionFailed("stream ended before the answer was finished")
                    yield from held
                    self._done = True
                    return
                except TransportError as exc:
                    if started or self._reopens <= 0:
                        raise StreamBroken(
                            f"stream broke after {self.chunks} chunks: {exc}",
                            received="".join(self._received),
                            chunks=self.chunks,
                        ) from exc
                    self._reopens -= 1
                    held.clear()
                    self.close()
                    log.info("stream broke before its first content byte; reopening")
                    self._response = self._open()
        finally:
            self.close()

    def _note(self, chunk: StreamChunk) -> None:
        self.chunks += 1
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if chunk.usage:
            self.usage = chunk.usage
        if chunk.content:
            self._events.extend(self.parser.feed(chunk.content))
            if self._keep_text:
                self._received.append(chunk.content)

    def text(self) -> Iterator[str]:
        """The raw content pieces, markers included."""
        for chunk in self:
            if chunk.content:
                yield chunk.content

    def events(self) -> Iterator[Event]:
        """Clean text and completed citation markers, as soon as each is safe to show."""
        for _ in self:
            yield from self._events
            self._events.clear()
        if self._done and self._parsed is None:
            final, self._parsed = self.parser.finish()
            yield from final

    def answer(self) -> Answer:
        """The whole answer (drains the stream first); the same object the default path would give."""
        for _ in self.events():
            pass
        parsed = self._parsed
        if parsed is None:
            raise StreamBroken("the stream did not finish", received="".join(self._received), chunks=self.chunks)
        return Answer(
            id=self.id or "",
            model=self.model or "",
            content=parsed.text,
            citations=parsed.citations,
            usage=self.usage,
            finish_reason=self.finish_reason,
            raw_content="".join(self._received),
            files=parsed.files,
        )
