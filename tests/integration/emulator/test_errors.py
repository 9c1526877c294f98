"""Every bad input gets the service's error body: {"error": {"code", "message"}, "status"}."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from infra.emulator import EmulatorServer
from tests.helpers import ASSISTANT

CHAT = "/assistant/chat/{name}/chat/completions"


def _post(
    emulator: EmulatorServer, path: str, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    sent = {"Api-Key": emulator.api_key} if headers is None else headers
    return requests.post(emulator.url + path, json=body, headers=sent, timeout=10, **kwargs)


def _assert_error(response: requests.Response, status: int, code: str, fragment: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["status"] == status
    assert body["error"]["code"] == code
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}],
    ids=["missing", "wrong-api-key", "wrong-bearer", "not-bearer"],
)
def test_auth_missing_or_wrong_key_is_401(emulator: EmulatorServer, headers: dict[str, str]) -> None:
    response = _post(emulator, CHAT.format(name=ASSISTANT), {"messages": [{"content": "hi"}]}, headers)
    _assert_error(response, 401, "UNAUTHENTICATED", "Invalid API key")


def test_auth_bearer_key_is_accepted(emulator: EmulatorServer) -> None:
    response = _post(
        emulator,
        CHAT.format(name=ASSISTANT),
        {"messages": [{"content": "What is the PTO policy?"}]},
        {"Authorization": f"Bearer {emulator.api_key}"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": []}, "Must have at least 1 message"),
        ({}, "Must have at least 1 message"),
        ({"messages": [{"role": "user", "content": ""}]}, "Message content cannot be empty"),
        ({"messages": [{"role": "user", "content": "   "}]}, "Message content cannot be empty"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "Role 'robot' is not valid"),
        ({"messages": [{"role": "system", "content": "hi"}, {"content": "hi"}]}, "Role 'system' is not valid"),
        ({"messages": [{"role": "User", "content": "hi"}]}, "Role 'User' is not valid"),
        ({"messages": [{"role": "", "content": "hi"}]}, "Role cannot be empty"),
        ({"messages": [{"content": "hi"}], "model": "gpt-99"}, "Invalid model `gpt-99`"),
        ({"messages": [{"content": "hi"}], "filter": {"kind": {"$regex": "x"}}}, "Unsupported filter operator"),
        ({"messages": [{"content": "hi"}], "temperature": "hot"}, "temperature"),
    ],
    ids=[
        "empty-messages",
        "no-messages",
        "empty-content",
        "blank-content",
        "bad-role",
        "system-role",
        "role-case",
        "empty-role",
        "unknown-model",
        "bad-filter",
        "bad-temperature",
    ],
)
def test_chat_bad_request_is_400_with_reason(emulator: EmulatorServer, body: dict[str, Any], fragment: str) -> None:
    _assert_error(_post(emulator, CHAT.format(name=ASSISTANT), body), 400, "INVALID_ARGUMENT", fragment)


@pytest.mark.parametrize(
    ("version", "route", "model", "allowed"),
    [
        (None, CHAT, "gpt-4.1", "gpt-4o, claude-3-5-sonnet"),
        (
            "2025-10",
            CHAT,
            "claude-sonnet-4-5",
            "gpt-4o, gpt-4.1, o4-mini, claude-3-5-sonnet, claude-3-7-sonnet, gemini-2.5-pro",
        ),
        ("2026-07", CHAT, "gpt-5", "gpt-4o, gpt-4.1, o4-mini, claude-sonnet-4-5, gemini-2.5-pro"),
        (
            "2026-07",
            "/assistant/chat/{name}",
            "claude-3-5-sonnet",
            "gpt-4o, gpt-4.1, o4-mini, gpt-5, claude-sonnet-4-5, gemini-2.5-pro",
        ),
    ],
    ids=["unversioned-is-2025-01", "2025-10-has-no-sonnet-4-5", "2026-completions-no-gpt-5", "2026-chat-no-claude-3"],
)
def test_chat_model_outside_the_versions_enum_gets_the_service_message(
    emulator: EmulatorServer, version: str | None, route: str, model: str, allowed: str
) -> None:
    headers = {"Api-Key": emulator.api_key, **({"X-Pinecone-Api-Version": version} if version else {})}
    response = _post(emulator, route.format(name=ASSISTANT), {"messages": [{"content": "hi"}], "model": model}, headers)
    _assert_error(response, 400, "INVALID_ARGUMENT", f"Invalid model `{model}`. Expected one of: {allowed}.")


@pytest.mark.parametrize(
    ("version", "route", "model"),
    [
        ("2025-10", CHAT, "claude-3-7-sonnet"),
        ("2026-04", CHAT, "claude-sonnet-4-5"),
        ("2026-07", "/assistant/chat/{name}", "gpt-5"),
    ],
)
def test_chat_model_in_the_versions_enum_is_served(
    emulator: EmulatorServer, version: str, route: str, model: str
) -> None:
    headers = {"Api-Key": emulator.api_key, "X-Pinecone-Api-Version": version}
    body = {"messages": [{"content": "PTO?"}], "model": model}
    response = _post(emulator, route.format(name=ASSISTANT), body, headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("version", ["2099-01", "2026-7", "latest"])
def test_unknown_api_version_is_400_naming_the_known_ones(emulator: EmulatorServer, version: str) -> None:
    response = requests.get(
        f"{emulator.url}/assistant/assistants/{ASSISTANT}",
        headers={"Api-Key": emulator.api_key, "X-Pinecone-Api-Version": version},
        timeout=10,
    )
    _assert_error(response, 400, "INVALID_ARGUMENT", f"Unsupported API version '{version}'")
    assert "2026-07" in response.json()["error"]["message"]


def test_chat_body_not_json_is_400(emulator: EmulatorServer) -> None:
    response = requests.post(
        emulator.url + CHAT.format(name=ASSISTANT), data=b"{nope", headers={"Api-Key": emulator.api_key}, timeout=10
    )
    _assert_error(response, 400, "INVALID_ARGUMENT", "not valid JSON")


def test_unknown_assistant_is_404(emulator: EmulatorServer) -> None:
    response = _post(emulator, CHAT.format(name="nobody"), {"messages": [{"content": "hi"}]})
    _assert_error(response, 404, "NOT_FOUND", 'Assistant "nobody" not found.')


def test_unknown_file_is_404(emulator: EmulatorServer) -> None:
    response = requests.get(
        f"{emulator.url}/assistant/files/{ASSISTANT}/no-such-file", headers={"Api-Key": emulator.api_key}, timeout=10
    )
    _assert_error(response, 404, "NOT_FOUND", "File with id no-such-file  not found")


def test_upload_unsupported_type_is_400(emulator: EmulatorServer) -> None:
    response = requests.post(
        f"{emulator.url}/assistant/files/{ASSISTANT}",
        files={"file": ("tool.exe", b"MZ")},
        headers={"Api-Key": emulator.api_key},
        timeout=10,
    )
    _assert_error(response, 400, "INVALID_ARGUMENT", "Unsupported file type '.exe'")


def test_upload_without_extension_is_400(emulator: EmulatorServer) -> None:
    response = requests.post(
        f"{emulator.url}/assistant/files/{ASSISTANT}",
        files={"file": ("README", b"x")},
        headers={"Api-Key": emulator.api_key},
        timeout=10,
    )
    _assert_error(response, 400, "INVALID_ARGUMENT", "has no extension")


def test_upload_oversized_text_is_413(emulator: EmulatorServer) -> None:
    big = b"a" * (10 * 1024 * 1024 + 1)
    response = requests.post(
        f"{emulator.url}/assistant/files/{ASSISTANT}",
        files={"file": ("big.txt", big)},
        headers={"Api-Key": emulator.api_key},
        timeout=30,
    )
    _assert_error(response, 413, "INVALID_ARGUMENT", "exceeds the 10 MB limit")


def test_upload_bad_metadata_is_400(emulator: EmulatorServer) -> None:
    response = requests.post(
        f"{emulator.url}/assistant/files/{ASSISTANT}",
        files={"file": ("a.txt", b"x")},
        params={"metadata": '{"$bad": 1}'},
        headers={"Api-Key": emulator.api_key},
        timeout=10,
    )
    _assert_error(response, 400, "INVALID_ARGUMENT", "must not start with '$'")


def test_create_assistant_bad_name_and_duplicate(emulator: EmulatorServer) -> None:
    bad = _post(emulator, "/assistant/assistants", {"name": "Bad_Name"})
    _assert_error(bad, 400, "INVALID_ARGUMENT", "Assistant name")
    duplicate = _post(emulator, "/assistant/assistants", {"name": ASSISTANT})
    _assert_error(duplicate, 409, "ALREADY_EXISTS", "already exists")


def test_unknown_route_is_404_json(emulator: EmulatorServer) -> None:
    response = requests.get(emulator.url + "/assistant/nothing-here", headers={"Api-Key": emulator.api_key}, timeout=5)
    _assert_error(response, 404, "NOT_FOUND", "No route")
