"""The streaming function URL's ASGI app (run by uvicorn under the Lambda Web Adapter, ``run.sh``).

Routes:
    POST /assistant/chat/{name}/chat/completions   the assistant's own format, proxied; the Pinecone key stays
                                                   here. Streams relay each upstream chunk as it arrives (in
                                                   the shape the openai SDK parses: a ``"delta": null`` the
                                                   service has sent goes out as ``{}``), then one more chunk
                                                   (``choices: []``) whose ``citeq`` field holds the structured
                                                   answer; default responses carry it too.
    GET  /assistant/assistants/{name}              describe, naming this app as the data-plane host (SDKs)
    POST /v1/requests                              enqueue one question -> 202 {"request_id"}
    GET  /v1/requests/{id}                         the stored result or its status
    GET  /v1/requests/{id}/stream                  SSE: status while queued/running, the answer text in chunks,
                                                   the citations, done; heartbeat every 15 s; Last-Event-ID
    GET  /v1/callback-secret                       this key's own callback signing secret (whsec_...)
    GET  /healthz
Auth: ``Authorization: Bearer <key>`` (or ``Api-Key``) checked against CITEQ_API_KEY_HASHES in constant time:
comma-separated entries ``<sha256 hex>`` or ``<sha256 hex>:<assistant>|<assistant>`` (a key limited to those
assistants). No entries means closed: every route but /healthz answers 401. A key sees only the requests it
created (others are 404, as if they did not exist). The function URL's own AuthType is set in template.yaml.

``create_app(settings)`` builds the app (uvicorn runs it with ``--factory``, reading the environment); the routes
find their settings, client and store on ``app.state``, so two apps in one process can differ.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from citeq import intake
from citeq.callbacks import caller_secret
from citeq.client import AssistantClient
from citeq.compose import Factory
from citeq.config import Caller, Settings
from citeq.errors import APIStatusError, CiteqError, ConfigurationError, ValidationError
from citeq.models import ASSISTANT_NAME, TERMINAL, ChatRequest, RequestRecord
from citeq.sse import comment, encode
from citeq.store import Store
from citeq.text import check_text, loads

log = logging.getLogger("citeq.stream")
POLL_SECONDS = 0.25
TEXT_CHUNK = 200


@dataclass(frozen=True)
class Service:
    """What the routes use, built once per app: the settings, the assistant client and the results store."""

    settings: Settings
    client: AssistantClient
    store: Store


def _service(request: Request) -> Service:
    """The service of the app serving ``request``."""
    return cast(Service, request.app.state.service)


def hash_key(key: str) -> str:
    """How API keys are stored: SHA-256 hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def authorized(request: Request) -> Caller | None:
    """The configured key the request carries, or None (always None when no keys are configured: closed)."""
    callers = _service(request).settings.callers
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("api-key", "")
    if not key or not callers:
        return None
    offered = hash_key(key).encode()
    # Compare with every configured digest (no early exit), so timing does not tell which one matched.
    matches = [caller for caller in callers if hmac.compare_digest(offered, caller.digest.encode())]
    return matches[0] if matches else None


def _assistant_error(caller: Caller, name: str) -> JSONResponse | None:
    """400 for a name outside the service's pattern, 403 for one this key may not use; None when fine."""
    if not ASSISTANT_NAME.match(name):
        return _error(400, "assistant name must be 1-63 lowercase letters, digits or '-'")
    if not caller.may_use(name):
        return _error(403, f"this API key may not use assistant {name!r}", "PERMISSION_DENIED")
    return None


async def _json_body(request: Request) -> Any:
    """The request's JSON body; ValidationError for invalid, non-UTF-8 or too deeply nested JSON, or for text the
    service could not take (lone surrogates, U+FFFE): a 400."""
    body = loads(await request.body(), what="request body")
    check_text(body)
    return body


def _error(status: int, message: str, code: str = "INVALID_ARGUMENT") -> JSONResponse:
    """Errors in the assistant's own shape, so SDKs report them as they would the service's."""
    return JSONResponse({"error": {"code": code, "message": message}, "status": status}, status_code=status)


def _stream_error(exc: CiteqError) -> dict[str, Any]:
    """A failure after a stream began, in the service's error shape (its own status and code when it sent one)."""
    if isinstance(exc, APIStatusError):
        log.info("upstream stream error %s %s", exc.status, exc.code)
        return {"error": {"code": exc.code or "UNKNOWN", "message": exc.message}, "status": exc.status}
    log.warning("upstream stream failed: %s", type(exc).__name__)
    message = f"the assistant stream failed: {type(exc).__name__}"
    return {"error": {"code": "UNAVAILABLE", "message": message}, "status": 502}


def _denied() -> JSONResponse:
    return _error(401, "missing or invalid API key", "UNAUTHENTICATED")


async def healthz(request: Request) -> Response:
    """Readiness for the Lambda Web Adapter."""
    return JSONResponse({"ok": True})


def _completion_body(answer: Any) -> dict[str, Any]:
    return {
        "id": answer.id,
        "choices": [
            {
                "index": 0,
                "finish_reason": answer.finish_reason,
                "message": {"role": "assistant", "content": answer.raw_content},
            }
        ],
        "model": answer.model,
        "usage": answer.usage,
        "citeq": answer.to_dict(),
    }


async def chat_completions(request: Request) -> Response:
    """Proxy to the assistant; streamed or default."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    name = request.path_params["name"]
    refused = _assistant_error(caller, name)
    if refused is not None:
        return refused
    try:
        body = await _json_body(request)
    except ValidationError as exc:
        return _error(400, exc.reason)
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    if not isinstance(body.get("stream"), bool | None):
        # "false" (a string) is truthy: it would have opened a stream the caller said it did not want.
        return _error(400, "stream must be true or false")
    client = _service(request).client
    try:
        # Fields other than the chat request's and "stream" are ignored, as OpenAI-compatible servers do.
        asked = ChatRequest.parse({**body, "question": None, "assistant": name})
        if not body.get("stream"):
            answer = await run_in_threadpool(lambda: client.chat(asked))
            return JSONResponse(_completion_body(answer))
        stream = await run_in_threadpool(lambda: client.stream(asked, reopen=False))
    except ValidationError as exc:
        return _error(400, str(exc))
    except APIStatusError as exc:
        return _error(exc.status, exc.message, exc.code or "UNKNOWN")
    except CiteqError as exc:
        return _error(502, f"the assistant could not be reached: {type(exc).__name__}", "UNAVAILABLE")

    async def relay() -> AsyncIterator[bytes]:
        chunks = iter(stream)
        try:
            while True:
                chunk = await run_in_threadpool(next, chunks, None)
                if chunk is None:
                    break
                yield b"data: " + (chunk.raw or "").encode() + b"\n\n"
            answer = await run_in_threadpool(stream.answer)
            final = {"id": answer.id, "choices": [], "model": answer.model, "citeq": answer.to_dict()}
            yield b"data: " + json.dumps(final).encode() + b"\n\n"
        except CiteqError as exc:
            # Mid-stream the status line has gone: the error travels as the service's own error object, which
            # SDKs raise, instead of a dropped connection and a traceback in the logs (issue 11).
            yield b"data: " + json.dumps(_stream_error(exc)).encode() + b"\n\n"
        finally:
            # Runs when the client disconnects too (the response task is cancelled): closing the upstream
            # connection now stops the assistant's work instead of leaving it to the garbage collector.
            stream.close()

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def describe_assistant(request: Request) -> Response:
    """Describe-assistant for SDKs pointed at this URL: the data-plane host is this app itself, so their chat
    calls come here too (and the Pinecone key never leaves the function)."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    name = request.path_params["name"]
    refused = _assistant_error(caller, name)
    if refused is not None:
        return refused
    return JSONResponse(
        {
            "name": name,
            "status": "Ready",
            "host": str(request.base_url).rstrip("/"),
            "region": "us",
            "metadata": None,
            "instructions": None,
        }
    )


async def create_request(request: Request) -> Response:
    """Enqueue one question -> 202 with its request id (stored with this key as its caller)."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    settings, store = _service(request).settings, _service(request).store
    try:
        payload = await _json_body(request)
        item = await run_in_threadpool(
            lambda: intake.validate(
                payload, settings.assistant, allow_hosts=settings.callback_allow_hosts, resolve=socket.getaddrinfo
            )
        )
        if not caller.may_use(item.assistant):
            return _error(403, f"this API key may not use assistant {item.assistant!r}", "PERMISSION_DENIED")
        accepted = await run_in_threadpool(lambda: intake.store_request(item, store=store, caller=caller.id))
    except ValidationError as exc:
        return _error(400, str(exc))
    return JSONResponse({"request_id": accepted.request_id, "status": "queued"}, status_code=202)


async def _own(store: Store, caller: Caller, request_id: str) -> RequestRecord | None:
    """The request if this key created it; None otherwise (another key's request is not acknowledged)."""
    if len(request_id) > 200:
        return None
    item = await run_in_threadpool(store.get, request_id)
    return item if item is not None and item.caller == caller.id else None


async def callback_secret(request: Request) -> Response:
    """This key's own callback signing secret, derived from the callback secret (issue 11: per caller)."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    try:
        master = await run_in_threadpool(_service(request).settings.resolve_callback_secret)
    except ConfigurationError as exc:
        log.error("callback secret unusable: %s", exc)
        return _error(503, "callback signing is not configured", "UNAVAILABLE")
    return JSONResponse({"caller": caller.id, "secret": caller_secret(master.get(), caller.id)})


async def get_request(request: Request) -> Response:
    """The stored result, or the request's status."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    item = await _own(_service(request).store, caller, request.path_params["request_id"])
    if item is None:
        return _error(404, "no such request", "NOT_FOUND")
    return JSONResponse(item.result())


def _answer_events(answer: dict[str, Any]) -> list[tuple[str, str]]:
    text = answer["message"]["content"]
    events = [("answer", json.dumps({"text": text[i : i + TEXT_CHUNK]})) for i in range(0, len(text), TEXT_CHUNK)]
    events.append(("citations", json.dumps({"citations": answer["citations"], "usage": answer.get("usage")})))
    return events


async def request_stream(request: Request) -> Response:
    """SSE for one request: status until it ends, then the answer (or the error), then done."""
    caller = authorized(request)
    if caller is None:
        return _denied()
    request_id = request.path_params["request_id"]
    try:
        resume_after = int(request.headers.get("last-event-id", "0"))
    except ValueError:
        resume_after = 0
    service = _service(request)
    if await _own(service.store, caller, request_id) is None:
        return _error(404, "no such request", "NOT_FOUND")

    async def events() -> AsyncIterator[bytes]:
        # Ids: status events and answer events are numbered in one sequence, so Last-Event-ID resumes anywhere.
        sent_status = None
        last_beat = time.monotonic()
        number = 0
        while True:
            if await request.is_disconnected():
                return
            item = await run_in_threadpool(service.store.get, request_id)
            assert item is not None
            if item.status != sent_status and item.status not in TERMINAL:
                number += 1
                sent_status = item.status
                if number > resume_after:
                    yield encode(json.dumps({"status": item.status}), event="status", id=str(number))
            if item.status in TERMINAL:
                break
            if time.monotonic() - last_beat >= service.settings.heartbeat_seconds:
                yield comment("heartbeat")
                last_beat = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)
        final: list[tuple[str, str]] = [("status", json.dumps({"status": item.status}))]
        if item.answer:
            final += _answer_events(item.answer)
        if item.error:
            final.append(("error", json.dumps(item.error)))
        final.append(("done", json.dumps({"request_id": request_id, "status": item.status})))
        # Terminal events are numbered after the status sequence so a resumed stream never repeats them.
        for offset, (kind, data) in enumerate(final, start=1000):
            if offset > resume_after:
                yield encode(data, event=kind, id=str(offset))

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


ROUTES = [
    Route("/healthz", healthz),
    Route("/assistant/assistants/{name}", describe_assistant),
    Route("/assistant/chat/{name}/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/requests", create_request, methods=["POST"]),
    Route("/v1/requests/{request_id}", get_request),
    Route("/v1/requests/{request_id}/stream", request_stream),
    Route("/v1/callback-secret", callback_secret),
]


def create_app(
    settings: Settings | None = None, *, client: AssistantClient | None = None, store: Store | None = None
) -> Starlette:
    """The ASGI app, from the environment unless ``settings`` is given (tests may pass their own ``client`` or
    ``store``). ConfigurationError naming the variable when the table or the API key is not configured, or when
    an entry of CITEQ_API_KEY_HASHES is malformed."""
    factory = Factory(settings)
    settings = factory.settings
    settings.require("table", "api_key")
    if not settings.callers:
        log.warning("CITEQ_API_KEY_HASHES is empty: every route but /healthz answers 401")
    app = Starlette(routes=ROUTES)
    app.state.service = Service(settings, client or factory.client(), store or factory.store())
    return app
