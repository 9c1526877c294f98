"""Every entrance (a batch line, ``POST /v1/requests``, the chat proxy, a signed webhook) refuses the same odd
body with the same words and writes nothing: JSON Python's parser takes but JSON has not (NaN, Infinity, 1e400),
an integer past Python's conversion bound (a bare ValueError, a 500, before), a repeated key (the last one won
silently), and a non-string assistant (false, 0 and "" took the default assistant silently)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from citeq import batch
from citeq.config import Settings
from citeq.models import Request
from citeq.webhooks import sign
from infra.local.context import LambdaContext
from tests.helpers import load_event

KEY = "entrance-test-key"
WHSEC = "whsec_" + base64.b64encode(b"entrance-test-secret-of-32-bytes").decode()
HEAD = '{"custom_id": "q-1", "callback_url": "https://hooks.example.com/cb", '

BODIES = [
    pytest.param('["Why?"]', "a request must be a JSON object", id="a-list"),
    pytest.param("null", "a request must be a JSON object", id="null"),
    pytest.param(HEAD + '"question": "Why?", "filter": {"kind": NaN}}', "NaN is not a JSON number", id="nan"),
    pytest.param(HEAD + '"question": "Why?", "metadata": {"n": Infinity}}', "Infinity is not a JSON number", id="inf"),
    pytest.param(HEAD + '"question": "Why?", "filter": {"n": 1e400}}', "1e400 is too large a number", id="1e400"),
    pytest.param(
        HEAD + '"question": "Why?", "metadata": {"n": ' + "9" * 5000 + "}}",
        "a number has more than 4300 digits",
        id="huge-int",
    ),
    pytest.param(
        HEAD + '"question": "Why?", "question": "Why not?"}',
        "the key 'question' appears more than once in one object",
        id="duplicate-key",
    ),
    pytest.param(
        HEAD + '"question": "Why?", "assistant": false}',
        "assistant name False is not valid (1-63 lowercase letters, digits or '-')",
        id="assistant-false",
    ),
    pytest.param(
        HEAD + '"question": "Why?", "assistant": ""}',
        "assistant name '' is not valid (1-63 lowercase letters, digits or '-')",
        id="assistant-empty",
    ),
]


class RecordingStore:
    """Stands in for the store: any write is recorded (and none is expected)."""

    def __init__(self) -> None:
        self.writes: list[Sequence[Request]] = []

    def put_request(self, request: Request, *, dispatch: str | None = None) -> bool:
        self.writes.append([request])
        return True

    def put_requests(self, requests: Sequence[Request], *, workers: int = 8) -> int:
        self.writes.append(requests)
        return len(requests)


def _settings() -> Settings:
    return Settings.from_env(
        {
            "CITEQ_API_KEY_HASHES": hashlib.sha256(KEY.encode()).hexdigest(),
            "CITEQ_ASSISTANT": "main",
            # Refused before any call goes out: nothing listens here.
            "CITEQ_ASSISTANT_HOST": "http://127.0.0.1:9",
            "PINECONE_API_KEY": "upstream-key",
            "CITEQ_TABLE": "not-written",
            "CITEQ_WEBHOOK_SECRETS": WHSEC,
        }
    )


def _reason(message: str) -> str:
    """The reason without the entrance's own prefix ("the line: ", "request body: ", "the body: ")."""
    prefix, _, rest = message.partition(": ")
    return rest if prefix in {"the line", "request body", "the body"} else message


@pytest.mark.parametrize(("body", "reason"), BODIES)
def test_every_entrance_odd_body_refused_with_the_same_reason_and_nothing_written(body: str, reason: str) -> None:
    from stream.app import create_app
    from webhook.app import build

    line = batch.parse(body, fmt="jsonl", default_assistant="main")
    assert not line.items and [_reason(e.reason) for e in line.errors] == [reason]

    store = RecordingStore()
    http = TestClient(create_app(_settings(), store=store))  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    queued = http.post("/v1/requests", content=body.encode(), headers=headers)
    assert queued.status_code == 400
    assert _reason(queued.json()["error"]["message"]) == reason

    raw = body.encode()
    event: dict[str, Any] = load_event("webhook-function-url.json")
    event["headers"].update(sign(WHSEC, "msg_entrances", int(time.time()), raw))
    event["body"], event["isBase64Encoded"] = raw.decode(), False
    hooked = build(_settings(), store=store)(event, LambdaContext())  # type: ignore[arg-type]
    assert hooked["statusCode"] == 400
    assert _reason(json.loads(hooked["body"])["error"]) == reason
    assert store.writes == []


@pytest.mark.parametrize(
    "body",
    [
        '{"messages": [{"role": "user", "content": "Why?"}], "filter": {"kind": NaN}}',
        '{"messages": [{"role": "user", "content": "Why?"}], "temperature": 0.1, "temperature": 1.5}',
        '{"messages": [{"role": "user", "content": "Why?"}], "stream": "false"}',
        '{"messages": [{"role": "user", "content": "Why?"}], "stream": 1}',
    ],
    ids=["nan", "duplicate-key", "stream-string", "stream-number"],
)
def test_chat_proxy_odd_body_is_a_400_before_anything_goes_upstream(body: str) -> None:
    from stream.app import create_app

    http = TestClient(create_app(_settings(), store=RecordingStore()))  # type: ignore[arg-type]
    response = http.post(
        "/assistant/chat/main/chat/completions",
        content=body.encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_chat_proxy_streamed_context_options_is_a_clear_400() -> None:
    from stream.app import create_app

    http = TestClient(create_app(_settings(), store=RecordingStore()))  # type: ignore[arg-type]
    body = {"messages": [{"role": "user", "content": "Why?"}], "stream": True, "context_options": {"top_k": 4}}
    response = http.post("/assistant/chat/main/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("context_options need a default (non-streamed) answer")
