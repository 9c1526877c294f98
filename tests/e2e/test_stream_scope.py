"""The stream app's API scope on the local stack (issue 11): a key sees only its own requests, keys may be limited
to assistants, bad assistant names and bodies are 400s that never reach the assistant, no keys means closed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
import requests
from standardwebhooks import Webhook

from citeq.store import Store
from infra.local import LocalStack
from infra.local.apps import UvicornThread
from tests.helpers import ASSISTANT, Admin


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_sees_only_the_requests_it_created(stack: LocalStack, emu: Admin) -> None:
    assert stack.stream is not None
    base = stack.stream.url
    created = requests.post(
        f"{base}/v1/requests", json={"question": "Hi?"}, headers=_auth(stack.api_key), timeout=10
    ).json()
    request_id = created["request_id"]
    assert re.fullmatch(r"r_[0-9a-f]{24}", request_id)  # 96 random bits: not guessable
    item = Store(stack.table).get(request_id)
    assert item is not None and item.caller is not None and item.caller.startswith("key:")
    assert requests.get(f"{base}/v1/requests/{request_id}", headers=_auth(stack.api_key), timeout=10).ok
    for path in (f"/v1/requests/{request_id}", f"/v1/requests/{request_id}/stream"):
        other = requests.get(f"{base}{path}", headers=_auth(stack.limited_key), timeout=10)
        assert (other.status_code, other.json()["error"]["code"]) == (404, "NOT_FOUND")


def test_a_key_limited_to_assistants_is_refused_others_before_anything_goes_upstream(
    stack: LocalStack, emu: Admin
) -> None:
    assert stack.stream is not None
    base = stack.stream.url
    chat = requests.post(
        f"{base}/assistant/chat/{ASSISTANT}/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi?"}]},
        headers=_auth(stack.limited_key),
        timeout=10,
    )
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "PERMISSION_DENIED"
    queued = requests.post(
        f"{base}/v1/requests", json={"question": "Hi?"}, headers=_auth(stack.limited_key), timeout=10
    )
    assert queued.status_code == 403
    described = requests.get(f"{base}/assistant/assistants/{ASSISTANT}", headers=_auth(stack.limited_key), timeout=10)
    assert described.status_code == 403
    assert emu.count("chat_completions") == 0 and emu.count("describe_assistant") == 0


@pytest.mark.parametrize("name", ["..", "%2e%2e", "a..b", "UPPER", "-x", "x" * 64, "a%2Fb", "a%0A", "%00"])
def test_assistant_names_outside_the_pattern_never_go_upstream(stack: LocalStack, emu: Admin, name: str) -> None:
    assert stack.stream is not None
    response = requests.post(
        f"{stack.stream.url}/assistant/chat/{name}/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi?"}]},
        headers=_auth(stack.api_key),
        timeout=10,
    )
    # 400 with a reason; a decoded slash no longer matches the route at all (404): either way nothing is sent.
    assert response.status_code in (400, 404)
    assert sum(emu.counters().get("chat_completions", {}).get(a, {}).get("total", 0) for a in emu.counters().get(
        "chat_completions", {}
    )) == 0


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than"),
        (b'{"messages": "abc"}', "messages must be a list"),
        (b'{"messages": [1]}', "messages must be a list"),
        (b'{"messages": [{"role": "user", "content": "\\ud83d"}]}', "U+D83D"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_bad_chat_and_request_bodies_are_400_with_a_reason(
    stack: LocalStack, emu: Admin, body: bytes, why: str
) -> None:
    assert stack.stream is not None
    headers = {**_auth(stack.api_key), "Content-Type": "application/json"}
    chat = requests.post(
        f"{stack.stream.url}/assistant/chat/{ASSISTANT}/chat/completions", data=body, headers=headers, timeout=10
    )
    queued = requests.post(f"{stack.stream.url}/v1/requests", data=body, headers=headers, timeout=10)
    for response in (chat, queued):
        assert response.status_code == 400, response.text
    if "U+" not in why:
        assert why in chat.json()["error"]["message"]
    assert emu.count("chat_completions") == 0


def test_each_key_gets_its_own_callback_secret(stack: LocalStack) -> None:
    assert stack.stream is not None
    mine = requests.get(f"{stack.stream.url}/v1/callback-secret", headers=_auth(stack.api_key), timeout=10).json()
    theirs = requests.get(
        f"{stack.stream.url}/v1/callback-secret", headers=_auth(stack.limited_key), timeout=10
    ).json()
    assert mine["caller"] != theirs["caller"] and mine["secret"] != theirs["secret"]
    assert stack.callback_secret not in (mine["secret"], theirs["secret"])
    Webhook(mine["secret"])  # a well-formed Standard Webhooks secret
    assert requests.get(f"{stack.stream.url}/v1/callback-secret", timeout=10).status_code == 401


@pytest.fixture
def closed_app(stack: LocalStack) -> Iterator[UvicornThread]:
    """A second stream app, built from the stack's settings with no keys."""
    from stream.app import create_app

    assert stack.function_settings is not None
    server = UvicornThread(create_app(replace(stack.function_settings, callers=()))).start()
    try:
        yield server
    finally:
        server.stop()


def test_an_empty_key_list_means_closed(closed_app: UvicornThread, stack: LocalStack) -> None:
    assert requests.get(f"{closed_app.url}/healthz", timeout=10).ok
    for method, path in [
        ("POST", "/v1/requests"),
        ("GET", "/v1/requests/r_x"),
        ("GET", f"/assistant/assistants/{ASSISTANT}"),
        ("POST", f"/assistant/chat/{ASSISTANT}/chat/completions"),
    ]:
        response = requests.request(
            method, f"{closed_app.url}{path}", json={"question": "q"}, headers=_auth(stack.api_key), timeout=10
        )
        assert response.status_code == 401, (path, response.text)
    assert json.loads(response.text)["error"]["code"] == "UNAUTHENTICATED"
