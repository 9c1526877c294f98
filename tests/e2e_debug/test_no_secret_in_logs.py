"""A whole local run at DEBUG (issue 11): every byte written to stdout/stderr and every log record is searched for
the run's secrets. Its own package, so its stack never runs beside the package-scoped one of tests/e2e."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from openai import OpenAI

from citeq.callbacks import caller_secret
from citeq.cli import main
from citeq.store import Store
from citeq.webhooks import sign
from infra.local import LocalStack


def _wait(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Receiver:
    """A callback receiver on 127.0.0.1."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_full_local_run_at_debug_prints_no_secret(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")  # the events too, as a debugging operator might
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    root = logging.getLogger()
    saved_level = root.level
    collect, echo = Collect(logging.DEBUG), logging.StreamHandler()
    collect.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root.addHandler(collect)
    root.addHandler(echo)
    root.setLevel(logging.DEBUG)  # Lambda's ApplicationLogLevel=DEBUG
    receiver = Receiver()
    try:
        with LocalStack(visibility_timeout=6, max_concurrency=2) as stack:
            assert stack.stream is not None and stack.webhook is not None and stack.emulator is not None
            secrets = [
                stack.api_key,
                stack.limited_key,
                stack.emulator.api_key,
                stack.callback_secret,
                caller_secret(stack.callback_secret, "webhook:default"),
                *stack.webhook_secrets,
            ]
            # A signed webhook with a callback.
            body = json.dumps(
                {"question": "What does a request over the rate limit receive?", "callback_url": receiver.url}
            ).encode()
            headers = {**sign(stack.webhook_secrets[0], "msg_debug", int(time.time()), body)}
            webhook = requests.post(f"{stack.webhook.url}/v1/webhooks", data=body, headers=headers, timeout=10)
            assert webhook.status_code == 202, webhook.text
            # A queued request followed on the stream route, and a live streamed answer through the proxy.
            auth = {"Authorization": f"Bearer {stack.api_key}"}
            created = requests.post(
                f"{stack.stream.url}/v1/requests", json={"question": "Hi?"}, headers=auth, timeout=10
            ).json()
            with requests.get(
                f"{stack.stream.url}/v1/requests/{created['request_id']}/stream", headers=auth, timeout=60
            ) as streamed:
                assert b"event: done" in streamed.content
            client = OpenAI(api_key=stack.api_key, base_url=f"{stack.stream.url}/assistant/chat/{stack.assistant}")
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "Hi?"}], stream=True
                )
                if c.choices
            )
            assert text
            requests.get(f"{stack.stream.url}/v1/requests/r_x", headers={"Authorization": "Bearer wrong"}, timeout=10)
            # A small batch through the CLI.
            path = tmp_path / "in.jsonl"
            path.write_text(json.dumps({"custom_id": "a", "question": "Hi?"}) + "\n")
            out = io.StringIO()
            assert main(["batch", "submit", str(path), "--wait"], out=out, err=out) == 0, out.getvalue()
            _wait(lambda: len(receiver.bodies) >= 1, "the callback")
            store = Store(stack.table)
            webhook_request = json.loads(webhook.text)["request_id"]
            _wait(lambda: bool(store.get(webhook_request).deliveries), "delivery recorded")  # type: ignore[union-attr]
    finally:
        receiver.close()
        root.removeHandler(collect)
        root.removeHandler(echo)
        root.setLevel(saved_level)
    captured = capfd.readouterr()
    everything = "\n".join([captured.out, captured.err, *records])
    assert any(" DEBUG " in record for record in records)  # the run really logged at DEBUG
    for secret in secrets:
        forms = {secret, secret.removeprefix("whsec_")}
        if secret.startswith("whsec_"):
            forms.add(base64.b64decode(secret.removeprefix("whsec_")).hex())
        for form in forms:
            assert form not in everything, f"a secret ({len(form)} characters) was printed"
