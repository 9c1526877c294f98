"""Stream app overhead (time to first byte, chunks kept apart) and webhook accept latency."""

from __future__ import annotations

import base64
import hashlib
import json
import statistics
import time

import boto3
import pytest
import requests

from citeq.config import Settings
from citeq.webhooks import sign
from infra.local.apps import UvicornThread
from infra.local.context import LambdaContext
from tests.bench.emulator_process import API_KEY, emulator_process
from tests.bench.figures import Figures

QUESTION = "What does a request over the rate limit receive?"
PROXY_AUTH = {"Authorization": "Bearer bench-key"}


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _measure(url: str, headers: dict[str, str]) -> tuple[float, int, int]:
    """Time to the first SSE event, events seen, and network reads that held more than one event."""
    start = time.perf_counter()
    first = None
    events = merged = 0
    with requests.post(
        url, json={"messages": [{"content": QUESTION}], "stream": True}, headers=headers, stream=True, timeout=30
    ) as response:
        for data in response.iter_content(chunk_size=None):
            count = data.count(b"\n\n")
            if count and first is None:
                first = time.perf_counter() - start
            events += count
            merged += count > 1
    assert first is not None
    return first, events, merged


def test_stream_app_ttfb_and_chunking_against_the_emulator_directly(figures: Figures) -> None:
    from stream.app import create_app

    with emulator_process("--chunk-delay-ms", "15", assistant="bench") as emulator:
        settings = Settings.from_env(
            {
                "PINECONE_API_KEY": API_KEY,
                "CITEQ_ASSISTANT_HOST": emulator,
                # No keys means closed (issue 11): the bench's own key.
                "CITEQ_API_KEY_HASHES": hashlib.sha256(b"bench-key").hexdigest(),
                # The proxy routes never touch the table.
                "CITEQ_TABLE": "unused-by-the-proxy",
            }
        )
        app = UvicornThread(create_app(settings)).start()
        try:
            direct_url = f"{emulator}/assistant/chat/bench/chat/completions"
            proxy_url = f"{app.url}/assistant/chat/bench/chat/completions"
            _measure(direct_url, {"Api-Key": API_KEY})
            _measure(proxy_url, PROXY_AUTH)
            direct, proxied = [], []
            for _ in range(30):
                direct.append(_measure(direct_url, {"Api-Key": API_KEY}))
                proxied.append(_measure(proxy_url, PROXY_AUTH))
        finally:
            app.stop()
    d50, p50 = statistics.median(d[0] for d in direct) * 1000, statistics.median(p[0] for p in proxied) * 1000
    print(
        f"\n[stream] TTFB p50 direct to the emulator {d50:.1f} ms, through the stream app {p50:.1f} ms -> added "
        f"{p50 - d50:.1f} ms (target <= 5); events per answer direct {direct[0][1]}, proxied {proxied[0][1]} "
        f"(+1: the answer object); reads holding merged events: direct {sum(d[2] for d in direct)}, "
        f"proxied {sum(p[2] for p in proxied)} of {sum(p[1] for p in proxied)} events"
    )
    figures.add("stream app time to first byte, p50", f"{p50:.1f} ms", f"direct {d50:.1f} ms", p50 / d50, "<= +5 ms")


def test_webhook_accept_latency_in_process_on_moto(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    secret = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-bench!").decode()
    from webhook.app import build

    monkeypatch.setenv("CITEQ_WEBHOOK_SECRETS", secret)
    handler = build(Settings.from_env())
    table = boto3.client("dynamodb")
    # A literal public address: intake resolves callback host names (issue 11), and this machine's DNS failing
    # for a made-up name would be timed instead of the accept path.
    body = json.dumps({"question": QUESTION, "callback_url": "https://93.184.216.34/x"}).encode()
    baseline, accept = [], []
    for n in range(300):
        start = time.perf_counter()
        table.get_item(TableName=worker_env["CITEQ_TABLE"], Key={"pk": {"S": f"REQ#none{n}"}, "sk": {"S": "REQ"}})
        baseline.append(time.perf_counter() - start)
        event = {
            "version": "2.0",
            "rawPath": "/v1/webhooks",
            "rawQueryString": "",
            "headers": {"content-type": "application/json", **sign(secret, f"msg_{n}", int(time.time()), body)},
            "requestContext": {
                "http": {"method": "POST", "path": "/v1/webhooks", "sourceIp": "127.0.0.1"},
                "requestId": str(n),
                "stage": "$default",
            },
            "body": body.decode(),
            "isBase64Encoded": False,
        }
        start = time.perf_counter()
        response = handler(event, LambdaContext())
        accept.append(time.perf_counter() - start)
        assert response["statusCode"] == 202
    p50, p99 = _percentile(accept, 50) * 1000, _percentile(accept, 99) * 1000
    b50 = statistics.median(baseline) * 1000
    print(
        f"\n[webhook] accept (verify + store + enqueue) on moto in process: p50 {p50:.1f} ms (target <= 20), "
        f"p99 {p99:.1f} ms (target <= 50); one GetItem on the same moto: p50 {b50:.2f} ms -> {p50 / b50:.1f}x"
    )
    figures.add("webhook accept p50 / p99 (verify, store, enqueue)", f"{p50:.1f} / {p99:.1f} ms",
                f"GetItem p50 {b50:.2f} ms", p50 / b50, "<= 20 / 50 ms")
