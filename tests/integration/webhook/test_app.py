"""The webhook handler on mock_aws with the function-URL event in events/ (signed by the test)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from citeq.config import Settings
from citeq.store import Store
from citeq.webhooks import sign
from infra.local.context import LambdaContext
from tests.helpers import load_event

SECRET = "whsec_" + base64.b64encode(b"webhook-unit-test-secret-32bytes").decode()


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _build(secrets: str | None = None, **environ: str) -> Handler:
    """``webhook.app.build`` over this test's environment, with ``secrets`` as CITEQ_WEBHOOK_SECRETS."""
    import os

    from webhook import app

    overrides = {} if secrets is None else {"CITEQ_WEBHOOK_SECRETS": secrets}
    return app.build(Settings.from_env({**os.environ, **overrides, **environ}))


@pytest.fixture
def app(worker_env: dict[str, str]) -> Handler:
    return _build(SECRET)


def _event(body: bytes | None = None, *, b64: bool = False, msg_id: str | None = None) -> dict[str, Any]:
    import time

    event = load_event("webhook-function-url.json")
    raw = body if body is not None else event["body"].encode()
    msg = msg_id or event["headers"]["webhook-id"]
    event["headers"].update(sign(SECRET, msg, int(time.time()), raw))
    event["body"] = base64.b64encode(raw).decode() if b64 else raw.decode()
    event["isBase64Encoded"] = b64
    return event


def test_signed_event_is_accepted_stored_and_enqueued(
    app: Handler, worker_env: dict[str, str], dispatch: Callable[[], None]
) -> None:
    response = app(_event(), LambdaContext())
    dispatch()
    assert response["statusCode"] == 202
    body = json.loads(response["body"])
    item = Store(worker_env["CITEQ_TABLE"]).get(body["request_id"])
    assert (
        item is not None
        and item.custom_id == "ticket-9120"
        and item.callback_url == "https://hooks.example.com/citeq"
    )
    messages = boto3.client("sqs").receive_message(QueueUrl=worker_env["CITEQ_QUEUE_URL"])["Messages"]
    assert json.loads(messages[0]["Body"])["request_id"] == body["request_id"]


def test_base64_body_is_decoded_before_verifying(app: Handler) -> None:
    assert app(_event(b64=True, msg_id="msg_b64"), LambdaContext())["statusCode"] == 202


def test_same_webhook_id_gives_the_same_request_once(
    app: Handler, worker_env: dict[str, str], dispatch: Callable[[], None]
) -> None:
    first = json.loads(app(_event(msg_id="msg_same"), LambdaContext())["body"])
    second = json.loads(app(_event(msg_id="msg_same"), LambdaContext())["body"])
    dispatch()
    assert first["request_id"] == second["request_id"] and second["duplicate"] is True
    sqs = boto3.client("sqs")
    received = sqs.receive_message(QueueUrl=worker_env["CITEQ_QUEUE_URL"], MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 1


def test_unsigned_event_is_401(app: Handler) -> None:
    event = load_event("webhook-function-url.json")
    response = app(event, LambdaContext())
    assert response["statusCode"] == 401


def _signed_with(secret: str, msg_id: str) -> dict[str, Any]:
    import time

    event = load_event("webhook-function-url.json")
    raw = event["body"].encode()
    event["headers"].update(sign(secret, msg_id, int(time.time()), raw))
    return event


def test_secrets_from_secrets_manager_follow_a_rotation(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities import parameters

    new = "whsec_" + base64.b64encode(b"the-rotated-webhook-secret-32byt").decode()
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="citeq/webhooks", SecretString=SECRET)["ARN"]
    monkeypatch.delenv("CITEQ_WEBHOOK_SECRETS", raising=False)
    parameters.clear_caches()
    app = _build(CITEQ_WEBHOOK_SECRETS_ARN=arn)
    try:
        assert app(_signed_with(SECRET, "msg_rot_1"), LambdaContext())["statusCode"] == 202
        # Rotation: both secrets for a while, then only the new one.
        secrets.put_secret_value(SecretId=arn, SecretString=f"{new},{SECRET}")
        parameters.clear_caches()  # what Powertools' 5-minute cache expiry does in Lambda
        assert app(_signed_with(new, "msg_rot_2"), LambdaContext())["statusCode"] == 202
        assert app(_signed_with(SECRET, "msg_rot_3"), LambdaContext())["statusCode"] == 202
        secrets.put_secret_value(SecretId=arn, SecretString=new)
        parameters.clear_caches()
        assert app(_signed_with(SECRET, "msg_rot_4"), LambdaContext())["statusCode"] == 401
        assert app(_signed_with(new, "msg_rot_5"), LambdaContext())["statusCode"] == 202
        # A secret that cannot be read: 503, and nothing about the secret in the answer.
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        parameters.clear_caches()
        response = app(_signed_with(new, "msg_rot_6"), LambdaContext())
        assert response["statusCode"] == 503
        assert "whsec" not in response["body"] and arn not in response["body"]
    finally:
        parameters.clear_caches()


# ------------------------------------------------------------------ issue 11
@pytest.mark.parametrize(
    "configured",
    [
        "whsec_" + base64.b64encode(b"too-short").decode(),
        "not-base64!",
        "whsec_" + base64.b64encode(bytes(32)).decode(),
    ],
)
def test_an_unusable_configured_secret_is_503_with_an_error_log_naming_the_setting(
    worker_env: dict[str, str], configured: str
) -> None:
    import logging

    from webhook.app import logger

    app = _build(f"{SECRET},{configured}")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    std = logging.getLogger(logger.name)
    std.addHandler(handler)
    try:
        response = app(_signed_with(SECRET, "msg_badcfg"), LambdaContext())
    finally:
        std.removeHandler(handler)
    assert response["statusCode"] == 503 and "not available" in response["body"]
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert errors and "CITEQ_WEBHOOK_SECRETS" in errors[0] and "entry 2" in errors[0]
    assert configured.removeprefix("whsec_") not in "".join(r.getMessage() for r in records) + response["body"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"question": "q", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested more than"),
        (b"[" * 200_000, "nested more than"),
        (b'{"messages": "abc", "callback_url": "https://h.example.com/"}', "messages must be a list"),
        (b'{"messages": [1], "callback_url": "https://h.example.com/"}', "messages must be a list"),
        (b'{"messages": [{"role": "user", "content": "\\ud800"}], "callback_url": "https://h.example.com/"}', "U+D800"),
        (b'{"question": "q", "callback_url": "http://169.254.169.254/latest/meta-data"}', "non-public address"),
        (b'{"question": "q", "callback_url": "https://h.example.com:6379/"}', "port"),
        (b'{"question": "q", "callback_url": "https://h.example.com\\\\@127.0.0.1/"}', "backslash"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"not json", "not valid JSON"),
    ],
)
def test_bad_bodies_are_400_with_a_reason(app: Handler, body: bytes, why: str) -> None:
    response = app(_event(body, msg_id=f"msg_bad_{len(body)}", b64=True), LambdaContext())
    assert response["statusCode"] == 400 and why in json.loads(response["body"])["error"]


def test_the_sender_is_stored_as_the_caller(worker_env: dict[str, str]) -> None:
    app = _build(f"acme={SECRET}")
    body = json.loads(app(_signed_with(SECRET, "msg_caller"), LambdaContext())["body"])
    item = Store(worker_env["CITEQ_TABLE"]).get(body["request_id"])
    assert item is not None and item.caller == "webhook:acme"


def test_the_deployed_entry_point_builds_from_the_environment_once(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhook import app

    monkeypatch.setenv("CITEQ_WEBHOOK_SECRETS", SECRET)
    monkeypatch.setattr(app, "_handler", None)  # a new container
    assert app.lambda_handler(_event(msg_id="msg_entry_1"), LambdaContext())["statusCode"] == 202
    # Read at the first invocation only, as at a cold start.
    monkeypatch.setenv("CITEQ_TABLE", "a-table-that-does-not-exist")
    assert app.lambda_handler(_event(msg_id="msg_entry_2"), LambdaContext())["statusCode"] == 202
