"""The emulator's HTTP server: routing, auth, fault injection, counters, JSON and SSE writing.

Admin endpoints (no auth, loopback only):
    GET    /_emulator/health               -> {"ok": true}
    GET    /_emulator/faults               -> current fault config and pending script
    PUT    /_emulator/faults               -> replace the config (JSON of FaultConfig fields)
    PATCH  /_emulator/faults               -> change some fields
    DELETE /_emulator/faults               -> no faults, empty script
    POST   /_emulator/faults/script        -> append scripted faults (a JSON list)
    GET    /_emulator/counters             -> requests served per route, per assistant, per status
    DELETE /_emulator/counters             -> reset the counters
    GET    /_emulator/plan                 -> plan limits, tokens in the one-minute window, usage per assistant
    PUT    /_emulator/plan                 -> replace the limits (JSON of PlanConfig fields; ``plan`` names one)
    PATCH  /_emulator/plan                 -> change some limits
    DELETE /_emulator/plan                 -> the limits the emulator started with, usage zeroed
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from infra.emulator import responses
from infra.emulator.exceptions import (
    EmulatorError,
    InjectedError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
)
from infra.emulator.faults import Decision, FaultConfig, Faults
from infra.emulator.models import Backend
from infra.emulator.plan import PlanConfig

log = logging.getLogger("infra.emulator")
DEFAULT_API_KEY = "pclocal-emulator-key"
# Routes whose answer a model generates: the first-token and answer latency apply to them only.
_GENERATING_ROUTES = frozenset({"chat_completions", "chat"})
# Largest body read at all (a 100 MB PDF plus multipart framing).
MAX_BODY_BYTES = 101 * 1024 * 1024


class Counters:
    """Requests served per route, assistant and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))

    def received(self, route: str, assistant: str | None) -> None:
        """Count a request as it arrives (a client that timed out still called the assistant)."""
        with self._lock:
            self._data[route][assistant or "-"]["total"] += 1

    def answered(self, route: str, assistant: str | None, status: int | str) -> None:
        """Count the status a request was answered with (before the client can see it)."""
        with self._lock:
            self._data[route][assistant or "-"][str(status)] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{route: {assistant: {"total": n, "200": n, ...}}}``."""
        with self._lock:
            return {r: {a: dict(c) for a, c in by.items()} for r, by in self._data.items()}

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._data.clear()


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Carries the backend, faults, counters and key to the handlers."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        faults: Faults,
        api_key: str,
        *,
        region: str = "us",
        counters: Counters | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.backend = backend
        self.faults = faults
        self.api_key = api_key
        self.region = region
        self.counters = counters or Counters()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (and the emulator's own injected drops) are not server errors.
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    # (route, assistant) of the request being served: its status is counted when the status line is sent,
    # so a client that has its response can rely on the counters including it.
    _count_as: tuple[str, str | None] | None = None

    _route: tuple[str, str | None] | None = None

    def _count(self, route: str, assistant: str | None) -> None:
        self.server.counters.received(route, assistant)
        self._count_as = self._route = (route, assistant)

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._count_as is not None:
            self.server.counters.answered(*self._count_as, code)
            self._count_as = None
        super().send_response(code, message)

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_error(PayloadTooLarge(f"Request body of {length} bytes is too large"), text_plain=False)
            return
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_emulator/"):
            self._admin(path, body)
            return
        found = responses.match(self.command, path)
        if found is None:
            self._send_error(NotFound(f"No route for {self.command} {path}"))
            return
        route, handler, params = found
        assistant = params.get("name")
        if route == "405":
            self._count(path, assistant)
            self._send_error(InvalidArgument(f"Method {self.command} not allowed on {path}"), status=405)
            return
        shape = self.server.faults.config
        request = responses.Request(
            self.command,
            path,
            query,
            headers,
            body,
            params,
            shape.answer_repeat,
            shape.stream_chunk_chars,
            self.server.region,
        )
        self._count(route, assistant)
        self._serve(route, assistant, handler, request)

    def _authorized(self, headers: dict[str, str]) -> bool:
        key = headers.get("api-key")
        auth = headers.get("authorization", "")
        if key is None and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        return key is not None and hmac.compare_digest(key.encode(), self.server.api_key.encode())

    def _serve(self, route: str, assistant: str | None, handler: responses.Handler, request: responses.Request) -> int:
        if not self._authorized(request.headers):
            return self._send_error(Unauthenticated("Invalid API key."))
        decision = self.server.faults.decide(route, assistant)
        config = self.server.faults.config
        if decision.delay_s:
            time.sleep(decision.delay_s)
        if decision.status is not None:
            return self._send_error(InjectedError(decision.status, retry_after=decision.retry_after))
        try:
            response = responses.call(handler, self.server.backend, request)
        except EmulatorError as exc:
            return self._send_error(exc)
        if response.events is not None:
            return self._send_stream(response, decision, config)
        # A default (non-streamed) answer arrives only when the whole answer is ready; other routes generate nothing.
        if route in _GENERATING_ROUTES and (config.first_token_ms or config.answer_ms):
            time.sleep((config.first_token_ms + config.answer_ms) / 1000)
        return self._send_json(response.status, response.body, response.headers, drop=decision.drop is not None)

    # ------------------------------------------------------------------ writing
    def _common_headers(self) -> None:
        self.send_header("x-pinecone-request-id", secrets.token_hex(16))
        self.send_header("access-control-allow-origin", "*")

    def _send_json(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        drop: bool = False,
        content_type: str = "application/json",
    ) -> int:
        data = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if drop:
            self.wfile.write(data[: len(data) // 2])
            self._abort()
            # The status line went out (and was counted), the body did not: counted as "dropped" too, so tests
            # can tell answers a client received from ones it lost.
            if self._route is not None:
                self.server.counters.answered(*self._route, "dropped")
            return status
        self.wfile.write(data)
        return status

    def _send_error(self, exc: EmulatorError, *, status: int | None = None, text_plain: bool | None = None) -> int:
        code = status or exc.status
        body = exc.body()
        body["status"] = code
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = f"{exc.retry_after:g}"
        plain = self.server.faults.config.text_plain_errors if text_plain is None else text_plain
        content_type = "text/plain; charset=utf-8" if plain else "application/json"
        return self._send_json(code, body, headers, content_type=content_type)

    def _send_stream(self, response: responses.Response, decision: Decision, config: FaultConfig) -> int:
        self.send_response(response.status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        self.wfile.flush()
        assert response.events is not None
        # The standard chat stream writes ``data:{...}`` with no space (as the service's docs show); the
        # OpenAI-compatible one says how (``data: {...}``, or ``data:{...}`` in the 2024 wire). Clients must
        # accept both.
        prefix = response.sse_prefix or b"data:"
        # The service sends the headers, then nothing (no keepalive) until the model's first token.
        if config.first_token_ms:
            time.sleep(config.first_token_ms / 1000)
        events: Iterable[dict[str, Any] | str] = response.events
        pace_ms = config.chunk_delay_ms
        if config.answer_ms and not pace_ms:
            events = list(events)
            pace_ms = config.answer_ms / max(1, len(events) - 1)
        for sent, event in enumerate(events):
            if decision.drop is not None and sent >= decision.drop_after_chunks:
                self._abort()
                return response.status
            if sent and pace_ms:
                time.sleep(pace_ms / 1000)
            payload = event if isinstance(event, str) else json.dumps(event)
            try:
                self._chunk(prefix + payload.encode() + b"\n\n")
            except OSError:
                # The client went away mid-stream: counted as "disconnected" so tests can see it.
                if self._route is not None:
                    self.server.counters.answered(*self._route, "disconnected")
                self.close_connection = True
                return response.status
        if config.stream_done:
            self._chunk(prefix + b"[DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        return response.status

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _abort(self) -> None:
        """Drop the connection mid-response, as a crashed upstream or a cut network would."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("connection already closed")

    # ------------------------------------------------------------------ admin
    def _admin(self, path: str, body: bytes) -> None:
        faults = self.server.faults
        try:
            payload = json.loads(body) if body else {}
            if path == "/_emulator/health":
                result: Any = {"ok": True}
            elif path == "/_emulator/counters":
                if self.command == "DELETE":
                    self.server.counters.reset()
                result = self.server.counters.snapshot()
            elif path == "/_emulator/faults":
                if self.command == "PUT":
                    faults.configure(FaultConfig.from_mapping(payload))
                elif self.command == "PATCH":
                    faults.configure(FaultConfig.from_mapping(payload, faults.config))
                elif self.command == "DELETE":
                    faults.clear()
                result = faults.snapshot()
            elif path == "/_emulator/plan":
                result = self.server.backend.plan.admin(self.command, payload)
            elif path == "/_emulator/faults/script" and self.command == "POST":
                faults.push(payload if isinstance(payload, list) else [payload])
                result = faults.snapshot()
            else:
                self._send_error(NotFound(f"No admin route {self.command} {path}"), text_plain=False)
                return
        except (ValueError, TypeError) as exc:
            self._send_error(InvalidArgument(str(exc)), text_plain=False)
            return
        self._send_json(200, result)


class EmulatorServer:
    """An emulator on a background thread; ``port=0`` picks a free port. Use as a context manager.

    The service has a data-plane host per region; so has the emulator: ``url`` serves region ``us`` (and the
    control plane), ``eu_url`` region ``eu`` (on ``eu_port``, by default another free port), and a data-plane
    call at the other region's host gets the service's 404 "Knowledge base not found".
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        faults: FaultConfig | None = None,
        plan: PlanConfig | None = None,
        eu_port: int = 0,
    ) -> None:
        self.backend = backend or Backend()
        if plan is not None:
            self.backend.plan.start_with(plan)
        self.faults = Faults(faults)
        self.httpd = EmulatorHTTPServer((host, port), self.backend, self.faults, api_key)
        self.eu_httpd = EmulatorHTTPServer(
            (host, eu_port), self.backend, self.faults, api_key, region="eu", counters=self.httpd.counters
        )
        self.url = self._url(self.httpd)
        self.eu_url = self._url(self.eu_httpd)
        self.backend.base_url = self.url
        self.backend.region_urls = {"us": self.url, "eu": self.eu_url}
        self.api_key = api_key
        self.ready = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def _url(httpd: EmulatorHTTPServer) -> str:
        bound_host, bound_port = httpd.server_address[:2]
        return f"http://{bound_host!s}:{bound_port}"

    @property
    def counters(self) -> Counters:
        """Requests served so far."""
        return self.httpd.counters

    def start(self) -> EmulatorServer:
        """Serve on daemon threads; returns once the sockets accept connections."""
        for httpd, name in ((self.eu_httpd, "citeq-emulator-eu"), (self.httpd, "citeq-emulator")):
            thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        # Listening sockets accept connections from their bind on; serve_forever picks them up.
        self.ready.set()
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets."""
        for httpd in (self.httpd, self.eu_httpd):
            httpd.shutdown()
            httpd.server_close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
