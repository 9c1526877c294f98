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
    GET  /healthz
Auth: ``Authorization: Bearer <key>`` (or ``Api-Key``) checked against CITEQ_API_KEY_HASHES (SHA-256 hex,
comma-separated) in constant time; the function URL's own AuthType is set in template.yaml.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from citeq import intake
from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.errors import APIStatusError, CiteqError, ValidationError
from citeq.sse import comment, encode
from citeq.store import TERMINAL, Store

settings = Settings.from_env()
KEY_HASHES = [h.strip().lower() for h in os.environ.get("CITEQ_API_KEY_HASHES", "").split(",") if h.strip()]
HEARTBEAT_SECONDS = float(os.environ.get("CITEQ_HEARTBEAT_SECONDS", "15"))
POLL_SECONDS = 0.25
TEXT_CHUNK = 200
_client: AssistantClient | None = None
_store: Store | None = None


def client() -> AssistantClient:
    """The assistant client, built once per container."""
    global _client
    if _client is None:
        _client = AssistantClient(settings)
    return _client


def store() -> Store:
    """The results store."""
    global _store
    if _store is None:
        settings.require("table")
        _store = Store(settings.table or "", ttl_days=settings.result_ttl_days)
    return _store


def hash_key(key: str) -> str:
    """How API keys are stored: SHA-256 hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def authorized(request: Request) -> bool:
    """Whether the request carries one of the configured keys (always, when none are configured)."""
    if not KEY_HASHES:
        return True
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("api-key", "")
    if not key:
        return False
    offered = hash_key(key).encode()
    return any([hmac.compare_digest(offered, known.encode()) for known in KEY_HASHES])


def _error(status: int, message: str, code: str = "INVALID_ARGUMENT") -> JSONResponse:
    """Errors in the assistant's own shape, so SDKs report them as they would the service's."""
    return JSONResponse({"error": {"code": code, "message": message}, "status": status}, status_code=status)


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
    if not authorized(request):
        return _denied()
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    name = request.path_params["name"]
    kwargs = {
        "messages": body.get("messages"),
        "assistant": name,
        "model": body.get("model"),
        "temperature": body.get("temperature"),
        "filter": body.get("filter"),
    }
    try:
        if not body.get("stream"):
            answer = await run_in_threadpool(lambda: client().chat(**kwargs))
            return JSONResponse(_completion_body(answer))
        stream = await run_in_threadpool(lambda: client().stream(**kwargs, reopen=False))
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
    if not authorized(request):
        return _denied()
    name = request.path_params["name"]
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
    """Enqueue one question -> 202 with its request id."""
    if not authorized(request):
        return _denied()
    try:
        payload = await request.json()
        accepted = await run_in_threadpool(
            lambda: intake.enqueue(payload, store=store(), default_assistant=settings.assistant)
        )
    except ValueError:
        return _error(400, "request body is not valid JSON")
    except ValidationError as exc:
        return _error(400, str(exc))
    return JSONResponse({"request_id": accepted.request_id, "status": "queued"}, status_code=202)


async def get_request(request: Request) -> Response:
    """The stored result, or the request's status."""
    if not authorized(request):
        return _denied()
    item = await run_in_threadpool(store().get, request.path_params["request_id"])
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
    if not authorized(request):
        return _denied()
    request_id = request.path_params["request_id"]
    try:
        resume_after = int(request.headers.get("last-event-id", "0"))
    except ValueError:
        resume_after = 0
    if await run_in_threadpool(store().get, request_id) is None:
        return _error(404, "no such request", "NOT_FOUND")

    async def events() -> AsyncIterator[bytes]:
        # Ids: status events and answer events are numbered in one sequence, so Last-Event-ID resumes anywhere.
        sent_status = None
        last_beat = time.monotonic()
        number = 0
        while True:
            if await request.is_disconnected():
                return
            item = await run_in_threadpool(store().get, request_id)
            assert item is not None
            if item.status != sent_status and item.status not in TERMINAL:
                number += 1
                sent_status = item.status
                if number > resume_after:
                    yield encode(json.dumps({"status": item.status}), event="status", id=str(number))
            if item.status in TERMINAL:
                break
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
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


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/assistant/assistants/{name}", describe_assistant),
        Route("/assistant/chat/{name}/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/requests", create_request, methods=["POST"]),
        Route("/v1/requests/{request_id}", get_request),
        Route("/v1/requests/{request_id}/stream", request_stream),
    ]
)
