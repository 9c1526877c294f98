"""Helpers shared by tests: paths, the emulator admin client, test documents."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "samples" / "docs"
EVENTS = ROOT / "events"
ASSISTANT = "citeq-demo"
# Questions the sample corpus (samples/docs) answers with citations.
QUESTIONS = [
    "What does a request over the rate limit receive?",
    "How many days of paid time off do employees accrue?",
    "How quickly are customers notified about a confirmed data breach?",
    "How long is production access granted for?",
    "How long does a bulk export link stay valid?",
]


class Clock:
    """A clock a test moves: call it for the time (epoch or monotonic seconds, as the code under test reads
    it); ``sleep`` advances it and records the sleep, so waits and retries take no real time."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def load_event(name: str) -> dict[str, Any]:
    """One of the Lambda events in ``events/`` (the same files ``sam local invoke -e`` uses)."""
    return dict(json.loads((EVENTS / name).read_text()))


class Admin:
    """The emulator's admin endpoints, over real HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        # A pooled keep-alive connection the server has just closed fails the next call with RemoteDisconnected
        # (an HTTP race, not an emulator fault): the idempotent admin calls are sent again on a new connection.
        retry = Retry(total=3, connect=3, read=2, status=0, backoff_factor=0.05,
                      allowed_methods=frozenset({"GET", "PUT", "DELETE", "PATCH"}))
        self.http.mount("http://", HTTPAdapter(max_retries=retry))

    def faults(self, **config: Any) -> None:
        """Replace the fault config."""
        self.http.put(f"{self.url}/_emulator/faults", json=config, timeout=5).raise_for_status()

    def script(self, *entries: dict[str, Any]) -> None:
        """Queue scripted faults."""
        self.http.post(f"{self.url}/_emulator/faults/script", json=list(entries), timeout=5).raise_for_status()

    def plan(self, **settings: Any) -> dict[str, Any]:
        """Change the plan's limits (``tokens_per_minute=20000``, ``plan="starter"``, ``context_tokens=[a, b]``)
        and return the plan's state; with no settings, only read it."""
        if settings:
            response = self.http.patch(f"{self.url}/_emulator/plan", json=settings, timeout=5)
        else:
            response = self.http.get(f"{self.url}/_emulator/plan", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def counters(self) -> dict[str, Any]:
        """Requests served per route and assistant."""
        response = self.http.get(f"{self.url}/_emulator/counters", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def count(self, route: str, assistant: str = ASSISTANT, status: str = "total") -> int:
        """How many requests a route served for an assistant (optionally with one status)."""
        return int(self.counters().get(route, {}).get(assistant, {}).get(status, 0))

    def reset(self) -> None:
        """No faults, zero counters, the plan the emulator started with and no usage against it."""
        self.http.delete(f"{self.url}/_emulator/faults", timeout=5).raise_for_status()
        self.http.delete(f"{self.url}/_emulator/plan", timeout=5).raise_for_status()
        self.http.delete(f"{self.url}/_emulator/counters", timeout=5).raise_for_status()


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """Write a PDF with one page per list of paragraphs."""
    from fpdf import FPDF

    pdf = FPDF()
    for paragraphs in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(2)
    pdf.output(str(path))
    return path


def stream_drain(table: str) -> Callable[[], None]:
    """A function that runs the real dispatcher over every change of ``table``'s stream since the last call,
    with the template's filters: what Lambda's stream trigger does, run on demand (mock_aws has no trigger)."""
    import boto3
    from dispatcher import app as dispatcher_app

    from citeq.config import Settings
    from infra.local.stream_poller import StreamPoller
    from infra.local.template import dispatcher_settings, load

    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    handler = dispatcher_app.handler_for(dispatcher_app.build(Settings.from_env()))
    poller = StreamPoller(boto3.client("dynamodbstreams"), arn, handler, filters=dispatcher_settings(load()).filters)
    return poller.drain


class LoopbackServer:
    """Base of the tests' small HTTP peers: ``serve(Handler)`` starts a ThreadingHTTPServer on 127.0.0.1 (a free
    port) on a daemon thread; ``url`` and ``port`` say where; ``close()`` stops it."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
