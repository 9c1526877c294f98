"""Every wire variant the service has sent (issue 12), replayed by the emulator through citeq's client, the
stream relay (read by the openai SDK) and ``citeq ask``: the answer citeq makes of each is the same."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import pytest
import requests
from openai import OpenAI

from citeq.cli import EXIT_OK, Factory, main
from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.models import Answer
from infra.emulator import Backend, EmulatorServer
from infra.emulator.answers import NO_ANSWER
from infra.local.apps import UvicornThread
from tests.helpers import ASSISTANT, SAMPLE_DOCS

CITED = "What does a request over the rate limit receive?"
# Nothing in the sample documents: the answer has no citations (the 2024 wire still sends a References header).
UNCITED = "zzzz qqqq?"
FIRST_SENTENCE = (
    "A request over the limit receives HTTP 429 with a Retry-After header that gives the number of seconds to wait."
)


@pytest.fixture(scope="module", params=["2024", "2025", "current"])
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def upstream(wire: str) -> Iterator[EmulatorServer]:
    backend = Backend(wire=wire)
    with EmulatorServer(backend) as server:
        backend.load_directory(ASSISTANT, SAMPLE_DOCS)
        yield server


def _settings(server: EmulatorServer) -> Settings:
    return Settings.from_env({}, api_key=server.api_key, pinecone_host=server.url, assistant=ASSISTANT)


# The relay's own bearer key (an empty key list closes the stream API).
RELAY_KEY = "citeq-relay-test-key"


@pytest.fixture(scope="module")
def relay(upstream: EmulatorServer) -> Iterator[str]:
    """The stream function's app under uvicorn, pointed at this wire's emulator; yields its URL."""
    from stream.app import create_app

    settings = Settings.from_env(
        {
            "PINECONE_API_KEY": upstream.api_key,
            "CITEQ_ASSISTANT_HOST": upstream.url,
            "CITEQ_ASSISTANT": ASSISTANT,
            "CITEQ_API_KEY_HASHES": hashlib.sha256(RELAY_KEY.encode()).hexdigest(),
            # The relay's chat routes never touch the table.
            "CITEQ_TABLE": "unused-by-the-relay",
        }
    )
    app = UvicornThread(create_app(settings)).start()
    try:
        yield app.url
    finally:
        app.stop()


def _raw_stream(url: str, key: str, question: str) -> bytes:
    with requests.post(
        f"{url}/assistant/chat/{ASSISTANT}/chat/completions",
        headers={"Api-Key": key},
        json={"messages": [{"content": question}], "stream": True},
        stream=True,
        timeout=10,
    ) as response:
        assert response.status_code == 200
        return b"".join(response.iter_content(chunk_size=None))


def _shape(answer: Answer) -> list[tuple[int, list[tuple[str | None, tuple[int, ...]]]]]:
    return [(c.position, [(r.file.name if r.file else None, r.pages) for r in c.references]) for c in answer.citations]


def test_wire_emulator_sends_the_variant_it_names(upstream: EmulatorServer, wire: str) -> None:
    cited = _raw_stream(upstream.url, upstream.api_key, CITED).decode()
    uncited = _raw_stream(upstream.url, upstream.api_key, UNCITED).decode()
    default = requests.post(
        f"{upstream.url}/assistant/chat/{ASSISTANT}/chat/completions",
        headers={"Api-Key": upstream.api_key},
        json={"messages": [{"content": UNCITED}]},
        timeout=10,
    ).json()["choices"][0]["message"]["content"]
    assert cited.startswith("data:{" if wire == "2024" else "data: {")
    assert ('"delta": null' in cited) is (wire == "2024")
    assert ("  [2]" in cited) is (wire != "current")  # two spaces before a marker without pages
    assert default == NO_ANSWER + ("\n\nReferences:\n" if wire == "2024" else "")
    assert ('"content": "\\n\\nReferences:\\n"' in uncited) is (wire == "2024")


def test_openai_sdk_straight_at_the_upstream_breaks_on_the_2024_finish_chunk(
    upstream: EmulatorServer, wire: str
) -> None:
    # Why the relay rewrites a null delta: read directly, the 2024 finish chunk breaks the usual idiom.
    client = OpenAI(api_key=upstream.api_key, base_url=f"{upstream.url}/assistant/chat/{ASSISTANT}", max_retries=0)

    def read() -> str:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": CITED}], stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    if wire == "2024":
        with pytest.raises(AttributeError):
            read()
    else:
        assert read().startswith(FIRST_SENTENCE[:-1])


def test_client_default_and_stream_give_the_same_clean_answer_on_every_wire(upstream: EmulatorServer) -> None:
    client = AssistantClient(_settings(upstream))
    for question in (CITED, UNCITED):
        default = client.chat(question)
        with client.stream(question) as stream:
            streamed = stream.answer()
        assert streamed.content == default.content
        assert _shape(streamed) == _shape(default)
        assert streamed.finish_reason == default.finish_reason == "stop"
        assert "References:" not in default.content and "  " not in default.content
    cited = client.chat(CITED)
    assert cited.content.startswith(FIRST_SENTENCE)
    assert _shape(cited)[0] == (len(FIRST_SENTENCE) - 1, [("lumen-api-guide.pdf", (2,))])
    assert client.chat(UNCITED).content == NO_ANSWER
    assert client.chat(UNCITED).citations == ()


def test_relay_sends_what_the_openai_sdk_parses_on_every_wire(upstream: EmulatorServer, relay: str) -> None:
    expected = AssistantClient(_settings(upstream)).chat(CITED)
    raw = _raw_stream(relay, RELAY_KEY, CITED).decode()
    assert '"delta": null' not in raw and '"delta":null' not in raw
    openai = OpenAI(api_key=RELAY_KEY, base_url=f"{relay}/assistant/chat/{ASSISTANT}", max_retries=0)
    for question in (CITED, UNCITED):
        text, finish, final = "", None, None
        for chunk in openai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}], stream=True
        ):
            if chunk.choices:
                # The common idiom: it raised AttributeError on a relayed ``"delta": null`` (issue 12).
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            final = (chunk.model_extra or {}).get("citeq") or final
        assert finish == "stop"
        assert isinstance(final, dict)
        assert "References:" not in final["message"]["content"]
        if question == CITED:
            assert final["message"]["content"] == expected.content
            assert text.startswith(FIRST_SENTENCE[:-1])
        else:
            assert final["message"]["content"] == NO_ANSWER and final["citations"] == []


@pytest.mark.parametrize("flags", [[], ["--no-stream"]], ids=["streamed", "default"])
def test_ask_prints_the_same_answer_on_every_wire(upstream: EmulatorServer, flags: list[str]) -> None:
    outputs = []
    for question in (CITED, UNCITED):
        out, err = io.StringIO(), io.StringIO()
        code = main(["ask", *flags, question], factory=Factory(_settings(upstream)), out=out, err=err)
        assert code == EXIT_OK, err.getvalue()
        outputs.append(out.getvalue())
    cited, uncited = outputs
    assert cited.startswith(FIRST_SENTENCE[:-1] + "[1].")
    assert "[1] lumen-api-guide.pdf, pp. 2" in cited
    assert "References:" not in cited and "  " not in cited
    assert uncited.strip() == NO_ANSWER


def test_ask_json_answer_object_has_no_trailer_on_every_wire(upstream: EmulatorServer) -> None:
    out = io.StringIO()
    assert main(["ask", "--json", UNCITED], factory=Factory(_settings(upstream)), out=out) == EXIT_OK
    answer = json.loads(out.getvalue())
    assert answer["message"]["content"] == NO_ANSWER
    assert answer["citations"] == []
