"""The streaming app (uvicorn on 127.0.0.1) and the webhook function (function-URL adapter) on the local stack."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from openai import OpenAI
from pinecone import Pinecone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from citeq.callbacks import caller_secret
from citeq.models import TERMINAL
from citeq.sse import ServerSentEvent, SSEDecoder
from citeq.store import Store
from infra.local import LocalStack
from infra.local.apps import UvicornThread
from tests.e2e.test_pipeline import wait_until
from tests.helpers import ASSISTANT, Admin

QUESTION = "What does a request over the rate limit receive?"


def _auth(stack: LocalStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


def _events(response: requests.Response) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    for data in response.iter_content(chunk_size=None):
        yield from decoder.feed(data)


# ------------------------------------------------------------------ the proxy route
def test_openai_sdk_streams_through_the_app_chunk_by_chunk(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    emu.faults(chunk_delay_ms=60)
    client = OpenAI(api_key=stack.api_key, base_url=f"{stack.stream.url}/assistant/chat/{ASSISTANT}", max_retries=0)
    start = time.perf_counter()
    arrivals: list[float] = []
    chunks = []
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": QUESTION}], stream=True
    ):
        arrivals.append(time.perf_counter() - start)
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "[1, pp. 2]" in text
    # Relayed as they came: the first chunk arrived while the emulator was still pacing the rest (60 ms apart).
    assert arrivals[-1] - arrivals[0] > 0.5 * 0.06 * (len(arrivals) - 2)
    final = chunks[-1].model_extra or {}
    assert chunks[-1].choices == [] and final["citeq"]["citations"][0]["references"][0]["pages"] == [2]
    assert final["citeq"]["message"]["content"].endswith("per minute.")


def test_openai_default_completion_carries_the_answer_object(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    client = OpenAI(api_key=stack.api_key, base_url=f"{stack.stream.url}/assistant/chat/{ASSISTANT}", max_retries=0)
    completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    assert "[1, pp. 2]" in (completion.choices[0].message.content or "")
    answer = (completion.model_extra or {})["citeq"]
    assert "[1, pp. 2]" not in answer["message"]["content"] and answer["citations"]


def test_pinecone_sdk_pointed_at_the_app(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    pc = Pinecone(api_key=stack.api_key, host=stack.stream.url)
    response = pc.assistants.chat_completions(assistant_name=ASSISTANT, messages=[{"content": QUESTION}])
    assert "[1, pp. 2]" in (response.choices[0].message.content or "")
    streamed = "".join(
        pc.assistants.chat_completions(assistant_name=ASSISTANT, messages=[{"content": QUESTION}], stream=True).text()
    )
    assert "[1, pp. 2]" in streamed
    assert emu.count("chat_completions") == 2


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Api-Key": "wrong"}])
def test_auth_failures(stack: LocalStack, emu: Admin, headers: dict[str, str]) -> None:
    assert stack.stream is not None
    base = stack.stream.url
    for method, path in [
        ("POST", f"/assistant/chat/{ASSISTANT}/chat/completions"),
        ("POST", "/v1/requests"),
        ("GET", "/v1/requests/r_x"),
        ("GET", "/v1/requests/r_x/stream"),
    ]:
        response = requests.request(method, base + path, json={}, headers=headers, timeout=10)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert emu.count("chat_completions") == 0


# ------------------------------------------------------------------ queued requests
def test_request_stream_from_queued_to_answered_and_resumed(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    base = stack.stream.url
    emu.faults(latency_ms=800)
    created = requests.post(
        f"{base}/v1/requests", json={"question": QUESTION, "custom_id": "live"}, headers=_auth(stack), timeout=10
    )
    assert created.status_code == 202
    request_id = created.json()["request_id"]
    with requests.get(
        f"{base}/v1/requests/{request_id}/stream", headers=_auth(stack), stream=True, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(_events(response))
    kinds = [e.event for e in events]
    assert kinds[0] == "status" and json.loads(events[0].data)["status"] in ("queued", "running")
    assert kinds[-1] == "done" and "answer" in kinds and "citations" in kinds
    text = "".join(json.loads(e.data)["text"] for e in events if e.event == "answer")
    assert text.startswith("A request over the limit receives HTTP 429")
    # Resume after the first answer event: nothing before it comes again.
    first_answer = next(e for e in events if e.event == "answer")
    with requests.get(
        f"{base}/v1/requests/{request_id}/stream",
        stream=True,
        timeout=30,
        headers={**_auth(stack), "Last-Event-ID": str(first_answer.id)},
    ) as response:
        resumed = list(_events(response))
    assert [e.id for e in resumed] == [e.id for e in events if int(e.id or 0) > int(first_answer.id or 0)]
    stored = requests.get(f"{base}/v1/requests/{request_id}", headers=_auth(stack), timeout=10).json()
    assert stored["status"] == "succeeded" and stored["answer"]["message"]["content"] == text


def test_request_stream_of_a_failed_request(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    base = stack.stream.url
    created = requests.post(
        f"{base}/v1/requests", json={"question": "Hi?", "model": "gpt-99"}, headers=_auth(stack), timeout=10
    ).json()
    with requests.get(
        f"{base}/v1/requests/{created['request_id']}/stream", headers=_auth(stack), stream=True, timeout=30
    ) as response:
        events = list(_events(response))
    error = next(e for e in events if e.event == "error")
    assert json.loads(error.data)["http_status"] == 400
    assert json.loads(events[-1].data)["status"] == "failed"


def test_bad_request_body_is_400(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    response = requests.post(
        f"{stack.stream.url}/v1/requests", json={"custom_id": "x"}, headers=_auth(stack), timeout=10
    )
    assert response.status_code == 400 and "question or messages" in response.json()["error"]["message"]


# ------------------------------------------------------------------ webhooks and callbacks
class Receiver:
    """A local callback receiver that fails the first ``failures`` deliveries."""

    def __init__(self, failures: int) -> None:
        receiver = self
        self.failures = failures
        self.deliveries: list[tuple[dict[str, str], bytes]] = []

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if len(receiver.deliveries) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _signed(secret: str, body: bytes, msg_id: str, timestamp: float) -> dict[str, str]:
    from datetime import UTC, datetime

    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def test_webhook_signatures(stack: LocalStack, emu: Admin) -> None:
    assert stack.webhook is not None
    url = f"{stack.webhook.url}/v1/webhooks"
    body = json.dumps({"question": QUESTION, "callback_url": "http://127.0.0.1:9/none"}).encode()
    now = time.time()
    old, new = stack.webhook_secrets
    other = "whsec_" + base64.b64encode(b"not-our-secret-at-all-123").decode()

    def post(headers: dict[str, str], data: bytes = body) -> requests.Response:
        return requests.post(url, data=data, headers=headers, timeout=10)

    accepted = [post(_signed(old, body, "msg_sig_1", now)), post(_signed(new, body, "msg_sig_2", now))]
    assert [r.status_code for r in accepted] == [202, 202]  # the second is the rotated-in key
    for headers, reason in [
        (_signed(other, body, "msg_sig_3", now), "no webhook-signature matches"),
        (_signed(old, body, "msg_sig_4", now - 600), "too old"),
        (_signed(old, body, "msg_sig_5", now + 600), "in the future"),
        ({"Content-Type": "application/json"}, "missing"),
    ]:
        response = post(headers)
        assert (response.status_code, reason in response.json()["error"]) == (401, True)
    tampered = post(_signed(old, body, "msg_sig_6", now), data=body.replace(b"rate", b"RATE"))
    assert tampered.status_code == 401
    # Two signatures in one header (rotation on the sender's side): any match is enough.
    both = _signed(old, body, "msg_sig_7", now)
    both["webhook-signature"] = (
        _signed(other, body, "msg_sig_7", now)["webhook-signature"] + " " + both["webhook-signature"]
    )
    accepted.append(post(both))
    assert accepted[-1].status_code == 202
    # Intake writes the record and the dispatcher sends it later; let these end so later tests count only theirs.
    store = Store(stack.table)
    for request_id in [response.json()["request_id"] for response in accepted]:
        wait_until(partial(_ended, store, request_id), what=f"{request_id} ended")


def _ended(store: Store, request_id: str) -> bool:
    record = store.get(request_id)
    return record is not None and record.status in TERMINAL


def _settle(stack: LocalStack, emu: Admin) -> None:
    """Let requests already in the queue finish, then zero the emulator's counters.

    A request whose record is written but not yet dispatched is not in the queue yet: a test that makes requests
    waits for them to end itself (see ``test_webhook_signatures``).
    """
    from citeq.queue import Queue
    from tests.e2e.test_pipeline import drained

    wait_until(drained(Queue(stack.queue_url)), what="earlier requests finished")
    time.sleep(0.5)
    emu.reset()


def test_webhook_replay_is_the_same_request_and_enqueued_once(stack: LocalStack, emu: Admin) -> None:
    assert stack.webhook is not None
    _settle(stack, emu)
    url = f"{stack.webhook.url}/v1/webhooks"
    body = json.dumps({"question": QUESTION, "callback_url": "http://127.0.0.1:9/none", "custom_id": "once"}).encode()
    headers = _signed(stack.webhook_secrets[0], body, "msg_replay", time.time())
    first = requests.post(url, data=body, headers=headers, timeout=10).json()
    second = requests.post(url, data=body, headers=headers, timeout=10).json()
    assert first["request_id"] == second["request_id"] and (first["duplicate"], second["duplicate"]) == (False, True)
    store = Store(stack.table)
    wait_until(lambda: store.get(first["request_id"]).status == "succeeded", what="answered")  # type: ignore[union-attr]
    time.sleep(0.5)
    assert emu.count("chat_completions") == 1


def test_webhook_with_a_base64_body_and_invalid_payloads(stack: LocalStack, emu: Admin) -> None:
    assert stack.webhook is not None
    url = f"{stack.webhook.url}/v1/webhooks"
    body = json.dumps({"question": QUESTION, "callback_url": "http://127.0.0.1:9/none"}).encode()
    headers = {
        **_signed(stack.webhook_secrets[0], body, "msg_b64", time.time()),
        "Content-Type": "application/octet-stream",
    }  # the adapter base64-encodes it, as Lambda does
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 202
    no_callback = json.dumps({"question": QUESTION}).encode()
    response = requests.post(
        url,
        data=no_callback,
        timeout=10,
        headers=_signed(stack.webhook_secrets[0], no_callback, "msg_nocb", time.time()),
    )
    assert response.status_code == 400 and "callback_url is required" in response.json()["error"]
    huge = json.dumps({"question": "x" * 300_000, "callback_url": "http://127.0.0.1:9/"}).encode()
    response = requests.post(
        url, data=huge, timeout=10, headers=_signed(stack.webhook_secrets[0], huge, "msg_huge", time.time())
    )
    assert response.status_code == 413


def test_callback_is_signed_retried_after_a_failure_and_recorded(stack: LocalStack, emu: Admin) -> None:
    assert stack.webhook is not None
    receiver = Receiver(failures=1)
    try:
        body = json.dumps(
            {"question": QUESTION, "callback_url": receiver.url, "custom_id": "cb-1", "metadata": {"ticket": "T-42"}}
        ).encode()
        headers = _signed(stack.webhook_secrets[0], body, "msg_callback", time.time())
        request_id = requests.post(f"{stack.webhook.url}/v1/webhooks", data=body, headers=headers, timeout=10).json()[
            "request_id"
        ]
        wait_until(lambda: len(receiver.deliveries) >= 2, timeout=60, what="a second delivery")
    finally:
        receiver.close()
    headers_seen, delivered = receiver.deliveries[-1]
    # Signed with the sender's own secret (derived for "webhook:default"), not the shared callback secret.
    with pytest.raises(WebhookVerificationError):
        Webhook(stack.callback_secret).verify(delivered.decode(), headers_seen)
    verified = Webhook(caller_secret(stack.callback_secret, "webhook:default")).verify(delivered.decode(), headers_seen)
    assert verified["request_id"] == request_id and verified["status"] == "succeeded"
    assert verified["custom_id"] == "cb-1" and verified["metadata"] == {"ticket": "T-42"}
    assert verified["answer"]["citations"]
    assert receiver.deliveries[0][0]["webhook-id"] == headers_seen["webhook-id"]  # same id on a retry
    store = Store(stack.table)
    wait_until(lambda: len(store.get(request_id).deliveries) == 2, what="deliveries recorded")  # type: ignore[union-attr]
    attempts = store.get(request_id).deliveries  # type: ignore[union-attr]
    assert [(d["attempt"], d["status"]) for d in attempts] == [(1, 500), (2, 200)]


def test_request_stream_sends_heartbeats_while_queued(stack: LocalStack, emu: Admin) -> None:
    from stream.app import create_app

    assert stack.stream is not None and stack.poller is not None and stack.function_settings is not None
    real_handler = stack.poller.handler
    # Keep the request queued (every record handed back), and ask a stream app that beats every 0.2 s, not 15 s.
    stack.poller.handler = lambda event, context: {
        "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]
    }
    beating = UvicornThread(create_app(replace(stack.function_settings, heartbeat_seconds=0.2))).start()
    try:
        created = requests.post(
            f"{beating.url}/v1/requests", json={"question": QUESTION}, headers=_auth(stack), timeout=10
        ).json()
        raw = b""
        with requests.get(
            f"{beating.url}/v1/requests/{created['request_id']}/stream",
            headers=_auth(stack),
            stream=True,
            timeout=30,
        ) as response:
            for data in response.iter_content(chunk_size=None):
                raw += data
                if raw.count(b": heartbeat") >= 2:
                    break
    finally:
        stack.poller.handler = real_handler
        beating.stop()
    assert b"event: status" in raw and b'"queued"' in raw
    assert raw.count(b": heartbeat\n\n") >= 2


def test_client_disconnect_closes_the_upstream_stream(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    emu.faults(chunk_delay_ms=100, answer_repeat=50)  # about 1,500 chunks: two and a half minutes if left running
    with requests.post(
        f"{stack.stream.url}/assistant/chat/{ASSISTANT}/chat/completions",
        headers=_auth(stack),
        json={"messages": [{"content": QUESTION}], "stream": True},
        stream=True,
        timeout=30,
    ) as response:
        for count, _ in enumerate(response.iter_content(chunk_size=None)):
            if count == 3:
                break
    # The app notices, closes its upstream connection, and the emulator's next write fails within a chunk or two.
    wait_until(
        lambda: emu.count("chat_completions", status="disconnected") == 1,
        timeout=10,
        what="the upstream stream to be closed",
    )
