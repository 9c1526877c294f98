"""Callback delivery over real sockets on 127.0.0.1 (issue 11): the resolved address is the one connected to,
a slow receiver is cut at the total deadline, and one bad receiver does not fail its batch's other callbacks."""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3
import pytest
from standardwebhooks import Webhook

from citeq.callbacks import SCHEDULE, CallbackDeliverer, caller_secret
from citeq.config import Settings
from citeq.models import ChatRequest, Request
from citeq.store import Store
from infra.local.context import LambdaContext
from tests.helpers import LoopbackServer

SECRET = "whsec_" + base64.b64encode(random.Random(3).randbytes(32)).decode()


class Receiver(LoopbackServer):
    """An HTTP receiver on 127.0.0.1 that records each delivery's headers and body and answers ``status``."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.serve(Handler)


class Dripper:
    """A receiver that takes the request, then sends its status line one byte at a time and never finishes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            # Each byte arrives well inside any per-read timeout, so only a total deadline can end this.
            while not self.stop.wait(0.05):
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def dripper() -> Iterator[Dripper]:
    d = Dripper()
    yield d
    d.close()


def _finished(store: Store, request_id: str, url: str, caller: str | None = None) -> None:
    store.put_request(
        Request(request_id, ChatRequest.ask("q", "a"), callback_url=url, caller=caller)
    )
    running = store.claim(store.get(request_id), lease_until=time.time() + 60)  # type: ignore[arg-type]
    assert running is not None and store.succeed(running, {"message": {"content": "a"}, "citations": []}, 5)


def test_the_resolved_address_is_the_one_connected_to_and_the_name_is_looked_up_once(
    aws: dict[str, str], receiver: Receiver
) -> None:
    store = Store(aws["ResultsTable"])
    # A name no real resolver knows: if anything looked it up a second time, the delivery would fail.
    _finished(store, "r-pin", f"http://receiver.invalid:{receiver.port}/cb?x=1", caller="webhook:acme")
    lookups: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> Any:
        lookups.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    deliverer = CallbackDeliverer(store, SECRET, allow_hosts=("receiver.invalid",), resolve=resolve)
    outcome = deliverer.deliver("r-pin", 1)
    assert (outcome.delivered, outcome.status) == (True, 204)
    assert lookups == [("receiver.invalid", receiver.port)]
    headers, body = receiver.deliveries[0]
    assert headers["host"] == f"receiver.invalid:{receiver.port}"
    # Signed with the caller's own secret, verifiable with the reference library.
    assert Webhook(caller_secret(SECRET, "webhook:acme")).verify(body, headers)["request_id"] == "r-pin"


def test_a_name_resolving_to_an_internal_address_is_refused_without_connecting(
    aws: dict[str, str], receiver: Receiver
) -> None:
    store = Store(aws["ResultsTable"])
    _finished(store, "r-internal", f"https://hooks.example.com:{8443}/cb")

    def to_loopback(host: str, port: int) -> Any:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    outcome = CallbackDeliverer(store, SECRET, resolve=to_loopback).deliver("r-internal", 1)
    assert outcome.error == "callback host resolves to a non-public address (127.0.0.1)"
    assert outcome.failure == "unsafe_url"
    assert outcome.retry_in is None and receiver.deliveries == []  # permanent: never retried


def test_a_receiver_answering_an_error_status_is_refused_and_retried_on_the_schedule(
    aws: dict[str, str], receiver: Receiver
) -> None:
    store = Store(aws["ResultsTable"])
    _finished(store, "r-503", f"http://127.0.0.1:{receiver.port}/cb")
    receiver.status = 503
    outcome = CallbackDeliverer(store, SECRET, allow_hosts=("127.0.0.1",)).deliver("r-503", 2)
    assert (outcome.delivered, outcome.status, outcome.failure) == (False, 503, "refused")
    assert outcome.retry_in == float(SCHEDULE[1]) and len(receiver.deliveries) == 1
    item = store.get("r-503")
    assert item is not None and item.callback_done is None and item.deliveries[-1]["failure"] == "refused"


def test_a_slow_receiver_is_cut_at_the_total_deadline_and_retried_later(aws: dict[str, str], dripper: Dripper) -> None:
    store = Store(aws["ResultsTable"])
    _finished(store, "r-slow", f"http://127.0.0.1:{dripper.port}/cb")
    deliverer = CallbackDeliverer(store, SECRET, allow_hosts=("127.0.0.1",), deadline_seconds=0.5)
    outcome = deliverer.deliver("r-slow", 1)
    assert (outcome.delivered, outcome.error, outcome.retry_in) == (
        False,
        "delivery failed: deadline passed",
        float(SCHEDULE[0]),
    )
    assert outcome.failure == "timed_out"
    item = store.get("r-slow")
    assert item is not None and item.deliveries[-1]["error"] == "delivery failed: deadline passed"
    assert item.deliveries[-1]["failure"] == "timed_out"


@pytest.fixture
def callback_handler(aws: dict[str, str]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The callback function's handler, built by ``callback.app`` from its settings."""
    from callback import app

    settings = Settings.from_env(
        {
            "CITEQ_TABLE": aws["ResultsTable"],
            "CITEQ_CALLBACK_SECRET": SECRET,
            "CITEQ_CALLBACK_QUEUE_URL": aws["CallbackQueue"],
            "CITEQ_CALLBACK_ALLOW_HOSTS": "127.0.0.1",
        }
    )
    return app.handler_for(app.build(settings))


def _records(queue_url: str, bodies: list[str]) -> dict[str, Any]:
    sqs = boto3.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(bodies):
        received += sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:callbacks",
                "awsRegion": "us-east-1",
            }
            for m in received
        ]
    }


def test_one_bad_receiver_does_not_fail_the_other_callbacks_of_its_batch(
    aws: dict[str, str],
    callback_handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    receiver: Receiver,
    dripper: Dripper,
) -> None:
    store = Store(aws["ResultsTable"])
    _finished(store, "r-good", f"http://127.0.0.1:{receiver.port}/good")
    _finished(store, "r-drip", f"http://127.0.0.1:{dripper.port}/slow")
    event = _records(
        aws["CallbackQueue"],
        [json.dumps({"request_id": "r-good"}), json.dumps({"request_id": "r-drip"}), "not json", "{}"],
    )
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}
    # The invocation has 4 s; 3 are kept back, so each delivery has about one second.
    result = callback_handler(event, LambdaContext(timeout_seconds=4.0))
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    assert failed == {by_body[json.dumps({"request_id": "r-drip"})], by_body["not json"], by_body["{}"]}
    assert [json.loads(body)["request_id"] for _, body in receiver.deliveries] == ["r-good"]
    slow = store.get("r-drip")
    assert slow is not None and slow.deliveries[-1]["error"] == "delivery failed: deadline passed"
    assert slow.deliveries[-1]["failure"] == "timed_out"


def _certificate(tmp_path: Any, name: str) -> tuple[str, str]:
    """A self-signed certificate for ``name`` (PEM paths): cert, key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.mark.parametrize(("url_host", "delivered"), [("receiver.invalid", True), ("other.invalid", False)])
def test_https_connects_to_the_pinned_address_and_still_verifies_the_host_name(
    aws: dict[str, str], receiver: Receiver, tmp_path: Any, url_host: str, delivered: bool
) -> None:
    import ssl

    cert, key = _certificate(tmp_path, "receiver.invalid")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    receiver.server.socket = server_context.wrap_socket(receiver.server.socket, server_side=True)
    client_context = ssl.create_default_context(cafile=cert)
    store = Store(aws["ResultsTable"])
    _finished(store, f"r-tls-{url_host}", f"https://{url_host}:{receiver.port}/cb")

    def resolve(host: str, port: int) -> Any:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    deliverer = CallbackDeliverer(store, SECRET, allow_hosts=(url_host,), resolve=resolve, tls=client_context)
    outcome = deliverer.deliver(f"r-tls-{url_host}", 1)
    assert outcome.delivered is delivered
    if not delivered:  # the certificate names receiver.invalid: a URL naming another host is refused
        assert outcome.error is not None and outcome.error.startswith("delivery failed: SSL")
        assert outcome.failure == "unreachable" and outcome.retry_in == float(SCHEDULE[0])
