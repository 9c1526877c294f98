"""A stream whose data carries the service's error object (issue 11): the client raises the service's error with
its message and code (no reopen, no StreamBroken), and the stream app relays it as an error event that the openai
SDK raises, with no traceback logged."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import openai
import pytest

from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.errors import APIStatusError, RateLimitError, ServerError
from citeq.models import ChatRequest
from infra.local.apps import UvicornThread
from tests.helpers import LoopbackServer

ROOT = Path(__file__).resolve().parents[3]
ERROR = {"error": {"code": "RESOURCE_EXHAUSTED", "message": "Token limit reached for this minute"}, "status": 429}


def _chunk(content: str) -> str:
    return json.dumps({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": content}}]})


class Upstream(LoopbackServer):
    """An assistant data plane on 127.0.0.1 that streams ``events`` (data strings) and counts its calls."""

    def __init__(self, events: list[str]) -> None:
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = "".join(f"data: {data}\n\n" for data in events).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.serve(Handler)


@pytest.fixture(params=["before content", "after content"])
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    events = [json.dumps(ERROR)] if request.param == "before content" else [_chunk("Partial "), json.dumps(ERROR)]
    server = Upstream(events)
    yield server
    server.close()


def test_the_client_raises_the_services_error_and_does_not_reopen(upstream: Upstream) -> None:
    settings = Settings.from_env({"PINECONE_API_KEY": "k", "CITEQ_ASSISTANT_HOST": upstream.url})
    client = AssistantClient(settings)
    with pytest.raises(RateLimitError) as info:
        client.stream(ChatRequest.ask("q?", "a")).answer()
    assert (info.value.code, info.value.message, info.value.status) == (
        "RESOURCE_EXHAUSTED",
        "Token limit reached for this minute",
        429,
    )
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("data", "event", "kind", "code"),
    [
        ('{"error": {"code": "INTERNAL", "message": "boom"}}', "message", ServerError, "INTERNAL"),
        ('{"error": "plain text"}', "message", ServerError, None),
        ("upstream exploded", "error", ServerError, None),
        ('{"error": {"message": "m"}, "status": 400}', "message", APIStatusError, None),
    ],
)
def test_error_event_shapes(data: str, event: str, kind: type[APIStatusError], code: str | None) -> None:
    from citeq.client import error_event

    error = error_event(data, event)
    assert isinstance(error, kind) and error.code == code and error.message


def test_ordinary_chunks_are_not_errors() -> None:
    from citeq.client import error_event

    assert error_event(_chunk("hi")) is None and error_event("not json") is None


@pytest.fixture
def relay(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[UvicornThread, str]]:
    """A copy of the stream app (its own module) in front of the upstream, with one API key."""
    import hashlib

    key = "relay-test-key"
    monkeypatch.setenv("CITEQ_API_KEY_HASHES", hashlib.sha256(key.encode()).hexdigest())
    monkeypatch.setenv("CITEQ_ASSISTANT_HOST", upstream.url)
    monkeypatch.setenv("PINECONE_API_KEY", "upstream-key")
    spec = importlib.util.spec_from_file_location("stream_app_relay", ROOT / "functions" / "stream" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stream_app_relay", module)
    spec.loader.exec_module(module)
    server = UvicornThread(module.app).start()
    try:
        yield server, key
    finally:
        server.stop()


def test_the_relay_passes_the_error_on_and_the_openai_sdk_raises_it(
    relay: tuple[UvicornThread, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, key = relay
    client = openai.OpenAI(api_key=key, base_url=f"{server.url}/assistant/chat/a", max_retries=0)
    caplog.set_level(logging.DEBUG)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "q?"}], stream=True
        ):
            received.append(chunk)
    assert "Token limit reached for this minute" in str(info.value.message)
    assert all(record.exc_info is None for record in caplog.records)
    assert "Traceback" not in caplog.text
