"""The openai SDK with base_url={host}/assistant/chat/{name}, and the raw stream framing."""

from __future__ import annotations

import json

import requests
from openai import OpenAI

from infra.emulator import EmulatorServer
from tests.helpers import ASSISTANT, Admin

QUESTION = [{"role": "user", "content": "Which header tells a client how long to wait after HTTP 429?"}]


def _client(emulator: EmulatorServer) -> OpenAI:
    return OpenAI(api_key=emulator.api_key, base_url=f"{emulator.url}/assistant/chat/{ASSISTANT}", max_retries=0)


def test_openai_default_completion_has_markers_references_and_usage(emulator: EmulatorServer) -> None:
    completion = _client(emulator).chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    content = completion.choices[0].message.content or ""
    assert "Retry-After header" in content
    assert "[1, pp. 2]" in content
    assert "References:\n1. [lumen-api-guide.pdf](" in content
    assert completion.model == "gpt-4o-2024-11-20"
    assert completion.id.startswith("0" * 16) and len(completion.id) == 32
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_openai_stream_yields_role_content_finish_and_usage_chunks(emulator: EmulatorServer) -> None:
    stream = _client(emulator).chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    default = _client(emulator).chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    assert text.split("References:")[0] == (default.choices[0].message.content or "").split("References:")[0]


def _raw_stream(emulator: EmulatorServer) -> list[str]:
    with requests.post(
        f"{emulator.url}/assistant/chat/{ASSISTANT}/chat/completions",
        headers={"Api-Key": emulator.api_key},
        json={"messages": QUESTION, "stream": True},
        stream=True,
        timeout=10,
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        return [line for line in response.iter_lines(decode_unicode=True) if line]


def test_raw_stream_marker_is_its_own_chunk_and_no_done_by_default(emulator: EmulatorServer) -> None:
    lines = _raw_stream(emulator)
    assert all(line.startswith("data: ") for line in lines)
    assert "data: [DONE]" not in lines
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[1:-2]]
    assert " [1, pp. 2]" in contents


def test_raw_stream_ends_with_done_when_flag_set(emulator: EmulatorServer, admin: Admin) -> None:
    admin.faults(stream_done=True)
    assert _raw_stream(emulator)[-1] == "data: [DONE]"


def test_same_files_and_question_give_same_answer(emulator: EmulatorServer) -> None:
    client = _client(emulator)
    first = client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    body = (first.choices[0].message.content or "").split("References:")[0]
    assert body == (second.choices[0].message.content or "").split("References:")[0]
