"""The standard chat's context_options over real HTTP: top_k bounds the snippets an answer draws on and cites,
top_k and snippet_size shrink the prompt tokens in proportion, bad options and context_options on
/chat/completions are the service's 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from pinecone import Pinecone
from pinecone.models.assistant.options import ContextOptions

from infra.emulator import EmulatorServer
from tests.helpers import ASSISTANT, Admin

CHAT = "/assistant/chat/{name}"
COMPLETIONS = "/assistant/chat/{name}/chat/completions"
# Its default answer cites three pages of the sample documents, so a limit of two snippets shows.
QUESTION = "What does a request over the rate limit receive?"
MESSAGES = [{"role": "user", "content": QUESTION}]


def _post(emulator: EmulatorServer, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        emulator.url + path.format(name=ASSISTANT), json=body, headers={"Api-Key": emulator.api_key}, timeout=10
    )


def _prompt_tokens(emulator: EmulatorServer, context_options: dict[str, Any] | None = None) -> int:
    body: dict[str, Any] = {"messages": MESSAGES}
    if context_options is not None:
        body["context_options"] = context_options
    response = _post(emulator, CHAT, body)
    assert response.status_code == 200, response.text
    return int(response.json()["usage"]["prompt_tokens"])


def _cited(citations: Any) -> set[tuple[str, tuple[int, ...]]]:
    return {(ref.file.name, tuple(ref.pages or ())) for c in citations for ref in c.references}


@pytest.fixture
def pc(emulator: EmulatorServer) -> Pinecone:
    return Pinecone(api_key=emulator.api_key, host=emulator.url)


def test_chat_top_k_2_cites_only_the_two_snippets_retrieved_and_costs_fewer_prompt_tokens(pc: Pinecone) -> None:
    default = pc.assistants.chat(assistant_name=ASSISTANT, messages=MESSAGES)
    limited = pc.assistants.chat(assistant_name=ASSISTANT, messages=MESSAGES, context_options=ContextOptions(top_k=2))
    retrieved = pc.assistants.context(assistant_name=ASSISTANT, query=QUESTION, top_k=2)
    assert len(_cited(default.citations)) > 2  # otherwise the limit could not show
    assert default.context_snippet_count > 2
    assert limited.context_snippet_count == 2
    snippet_pages = {
        (s.reference.file.name, tuple(getattr(s.reference, "pages", None) or ())) for s in retrieved.snippets
    }
    assert 0 < len(_cited(limited.citations)) <= 2
    assert _cited(limited.citations) <= snippet_pages
    assert limited.usage.prompt_tokens < default.usage.prompt_tokens


def test_chat_top_k_in_a_stream_sets_the_snippet_count_and_the_usage(emulator: EmulatorServer) -> None:
    body = {"messages": MESSAGES, "stream": True, "context_options": {"top_k": 2}}
    response = _post(emulator, CHAT, body)
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data:")]
    start, end = (json.loads(events[i][len("data:") :]) for i in (0, -1))
    assert start["context_snippet_count"] == 2
    assert end["usage"]["prompt_tokens"] == _prompt_tokens(emulator, {"top_k": 2})


def test_chat_prompt_tokens_shrink_in_proportion_to_top_k_and_snippet_size(emulator: EmulatorServer) -> None:
    default = _prompt_tokens(emulator)
    assert _prompt_tokens(emulator, {"top_k": 16, "snippet_size": 2048}) == default
    top_k_2 = _prompt_tokens(emulator, {"top_k": 2})  # 1/8 of the context
    snippet_512 = _prompt_tokens(emulator, {"snippet_size": 512})  # 1/4 of the context
    assert top_k_2 < snippet_512 < default
    # The instructions, the question and the fixed overhead do not shrink, so compare what was saved:
    # (1 - 1/8) / (1 - 1/4) of the same context, up to rounding.
    assert (default - top_k_2) / (default - snippet_512) == pytest.approx(7 / 6, abs=0.001)
    assert _prompt_tokens(emulator, {"top_k": 64, "snippet_size": 8192}) > default


def test_chat_top_k_2_costs_fewer_prompt_tokens_when_the_context_is_measured(
    emulator: EmulatorServer, admin: Admin
) -> None:
    admin.plan(context_tokens="measured")
    assert _prompt_tokens(emulator, {"top_k": 2}) < _prompt_tokens(emulator)


@pytest.mark.parametrize(
    ("context_options", "fragment"),
    [
        ({"top_k": 0}, "context_options.top_k must be an integer between 1 and 64, got 0"),
        ({"top_k": 65}, "context_options.top_k must be an integer between 1 and 64, got 65"),
        ({"top_k": "2"}, "context_options.top_k must be an integer between 1 and 64, got '2'"),
        ({"top_k": 2.5}, "context_options.top_k must be an integer between 1 and 64, got 2.5"),
        ({"top_k": True}, "context_options.top_k must be an integer between 1 and 64, got True"),
        ({"snippet_size": 511}, "context_options.snippet_size must be an integer between 512 and 8192, got 511"),
        ({"snippet_size": 8193}, "context_options.snippet_size must be an integer between 512 and 8192, got 8193"),
        ({"snippet_size": "1024"}, "context_options.snippet_size must be an integer between 512 and 8192"),
        ({"multimodal": "false"}, "context_options.multimodal must be a boolean, got 'false'"),
        ({"include_binary_content": 1}, "context_options.include_binary_content must be a boolean, got 1"),
        ({"topk": 2}, "context_options has unknown field(s) topk; known fields: top_k, snippet_size"),
        ([{"top_k": 2}], "context_options must be an object"),
        ("top_k=2", "context_options must be an object"),
    ],
    ids=[
        "top_k-0",
        "top_k-65",
        "top_k-string",
        "top_k-float",
        "top_k-bool",
        "snippet-511",
        "snippet-8193",
        "snippet-string",
        "multimodal-string",
        "binary-number",
        "unknown-key",
        "list",
        "string",
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["default", "stream"])
def test_chat_invalid_context_options_are_400_with_a_clear_message(
    emulator: EmulatorServer, context_options: Any, fragment: str, stream: bool
) -> None:
    response = _post(emulator, CHAT, {"messages": MESSAGES, "stream": stream, "context_options": context_options})
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize(
    "context_options",
    [
        None,
        {},
        {"top_k": 1, "snippet_size": 512},
        {"top_k": 64, "snippet_size": 8192, "multimodal": False, "include_binary_content": False},
        {"top_k": None, "snippet_size": None, "multimodal": None, "include_binary_content": None},
    ],
    ids=["null", "empty", "smallest", "largest-and-flags", "null-fields"],
)
def test_chat_context_options_at_their_bounds_are_accepted(emulator: EmulatorServer, context_options: Any) -> None:
    response = _post(emulator, CHAT, {"messages": MESSAGES, "context_options": context_options})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [False, True], ids=["default", "stream"])
@pytest.mark.parametrize("context_options", [{"top_k": 2}, {}], ids=["top_k", "empty"])
def test_chat_completions_refuses_context_options(
    emulator: EmulatorServer, context_options: dict[str, Any], stream: bool
) -> None:
    body = {"messages": MESSAGES, "stream": stream, "context_options": context_options}
    response = _post(emulator, COMPLETIONS, body)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "message": "context_options is not supported on /chat/completions; "
            "use the standard chat (/assistant/chat/{name})",
        },
        "status": 400,
    }
