"""The webhook handler on mock_aws with the function-URL event in events/ (signed by the test)."""

from __future__ import annotations

import base64
import importlib
import json
import sys
from types import ModuleType
from typing import Any

import boto3
import pytest

from citeq.store import Store
from citeq.webhooks import sign
from infra.local.context import LambdaContext
from tests.helpers import load_event

SECRET = "whsec_" + base64.b64encode(b"webhook-unit-test-secret-32bytes").decode()


@pytest.fixture
def app(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CITEQ_WEBHOOK_SECRETS", SECRET)
    if "webhook.app" in sys.modules:
        return importlib.reload(sys.modules["webhook.app"])
    return importlib.import_module("webhook.app")


def _event(body: bytes | None = None, *, b64: bool = False, msg_id: str | None = None) -> dict[str, Any]:
    import time

    event = load_event("webhook-function-url.json")
    raw = body if body is not None else event["body"].encode()
    msg = msg_id or event["headers"]["webhook-id"]
    event["headers"].update(sign(SECRET, msg, int(time.time()), raw))
    event["body"] = base64.b64encode(raw).decode() if b64 else raw.decode()
    event["isBase64Encoded"] = b64
    return event


def test_signed_event_is_accepted_stored_and_enqueued(app: ModuleType, worker_env: dict[str, str]) -> None:
    response = app.lambda_handler(_event(), LambdaContext())
    assert response["statusCode"] == 202
    body = json.loads(response["body"])
    item = Store(worker_env["CITEQ_TABLE"]).get(body["request_id"])
    assert (
        item is not None
        and item.custom_id == "ticket-9120"
        and item.callback == {"url": "https://hooks.example.com/citeq"}
    )
    messages = boto3.client("sqs").receive_message(QueueUrl=worker_env["CITEQ_QUEUE_URL"])["Messages"]
    assert json.loads(messages[0]["Body"])["request_id"] == body["request_id"]


def test_base64_body_is_decoded_before_verifying(app: ModuleType) -> None:
    assert app.lambda_handler(_event(b64=True, msg_id="msg_b64"), LambdaContext())["statusCode"] == 202


def test_same_webhook_id_gives_the_same_request_once(app: ModuleType, worker_env: dict[str, str]) -> None:
    first = json.loads(app.lambda_handler(_event(msg_id="msg_same"), LambdaContext())["body"])
    second = json.loads(app.lambda_handler(_event(msg_id="msg_same"), LambdaContext())["body"])
    assert first["request_id"] == second["request_id"] and second["duplicate"] is True
    sqs = boto3.client("sqs")
    received = sqs.receive_message(QueueUrl=worker_env["CITEQ_QUEUE_URL"], MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 1


def test_unsigned_event_is_401(app: ModuleType) -> None:
    event = load_event("webhook-function-url.json")
    response = app.lambda_handler(event, LambdaContext())
    assert response["statusCode"] == 401
