"""The assistant client against the emulator on 127.0.0.1, checked with the emulator's call counters."""

from __future__ import annotations

import logging
import random
import socket

import pytest

from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectionFailed,
    DeadlineExceeded,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamBroken,
    Timeout,
    ValidationError,
)
from citeq.models import Answer, ChatRequest
from citeq.retry import RetryPolicy
from infra.emulator import EmulatorServer
from tests.helpers import ASSISTANT, Admin, Clock

QUESTION = "What does a request over the rate limit receive?"


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


def make_client(emulator: EmulatorServer, clock: Clock, **settings: object) -> AssistantClient:
    values: dict[str, object] = {
        "api_key": emulator.api_key,
        "pinecone_host": emulator.url,
        "assistant": ASSISTANT,
        **settings,
    }
    return AssistantClient(
        Settings.from_env({}, **values),
        policy=RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=4.0),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(3),
    )


def test_default_answer_has_clean_text_and_structured_citations(emulator: EmulatorServer, clock: Clock) -> None:
    answer = make_client(emulator, clock).chat(QUESTION)
    assert "[1, pp. 2]" not in answer.content and "[1, pp. 2]" in answer.raw_content
    first = answer.citations[0]
    assert answer.content[: first.position + 1].endswith("seconds to wait.")
    ref = first.references[0]
    assert ref.file is not None and ref.file.name == "lumen-api-guide.pdf" and ref.pages == (2,)
    assert ref.file.url_expires_at is not None and ref.file.id is not None
    assert answer.usage is not None and answer.model == "gpt-4o-2024-11-20"
    assert answer.to_dict()["message"]["content"] == answer.content


def test_stream_yields_chunks_and_ends_with_the_default_answer(emulator: EmulatorServer, clock: Clock) -> None:
    client = make_client(emulator, clock)
    default = client.chat(QUESTION)
    with client.stream(QUESTION) as stream:
        chunks = list(stream)
        streamed = stream.answer()
    assert chunks[0].role == "assistant" and chunks[-1].usage is not None
    assert streamed.content == default.content
    assert [
        (c.position, [(r.file.name if r.file else None, r.pages) for r in c.references]) for c in streamed.citations
    ] == [(c.position, [(r.file.name if r.file else None, r.pages) for r in c.references]) for c in default.citations]
    assert streamed.usage == default.usage


def _cited(answer: Answer) -> list[tuple[int, list[tuple[str | None, tuple[int, ...]]]]]:
    return [(c.position, [(r.file.name if r.file else None, r.pages) for r in c.references]) for c in answer.citations]


def test_context_options_go_to_the_standard_chat_and_give_the_same_citations(
    emulator: EmulatorServer, admin: Admin, clock: Clock
) -> None:
    client = make_client(emulator, clock)
    default = client.chat(QUESTION)
    scoped = client.chat(ChatRequest.ask(QUESTION, ASSISTANT, context_options={"top_k": 16}))
    assert (admin.count("chat"), admin.count("chat_completions")) == (1, 1)
    # The standard chat's structured citations are the answer object the markers give.
    assert scoped.content == default.content
    assert _cited(scoped) == _cited(default)
    smaller = client.chat(ChatRequest.ask(QUESTION, ASSISTANT, context_options={"top_k": 2, "snippet_size": 512}))
    assert smaller.usage and default.usage and smaller.usage["prompt_tokens"] < default.usage["prompt_tokens"]
    with pytest.raises(ValidationError, match="context_options need a default"):
        client.stream(ChatRequest.ask(QUESTION, ASSISTANT, context_options={"top_k": 2}))


def test_host_is_discovered_once_and_cached(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    client = make_client(emulator, clock)
    client.chat(QUESTION)
    client.chat(QUESTION)
    assert admin.count("describe_assistant") == 1
    assert admin.count("chat_completions") == 2


def test_assistant_host_setting_skips_discovery(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    make_client(emulator, clock, pinecone_host="http://127.0.0.1:9", assistant_host=emulator.url).chat(QUESTION)
    assert admin.count("describe_assistant") == 0
    assert admin.count("chat_completions") == 1


def test_429_with_retry_after_then_success_is_two_calls(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"status": 429, "retry_after": 3})
    make_client(emulator, clock).chat(QUESTION)
    assert admin.count("chat_completions") == 2
    assert clock.sleeps == [3.0]


def test_429_without_retry_after_backs_off_with_jitter(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"status": 429}, {"status": 429})
    make_client(emulator, clock).chat(QUESTION)
    assert admin.count("chat_completions") == 3
    assert len(clock.sleeps) == 2 and 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retried(emulator: EmulatorServer, admin: Admin, clock: Clock, status: int) -> None:
    admin.script({"status": status})
    make_client(emulator, clock).chat(QUESTION)
    assert admin.count("chat_completions") == 2


def test_persistent_429_gives_up_after_max_attempts(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"status": 429, "retry_after": 1, "count": 10})
    with pytest.raises(RateLimitError) as info:
        make_client(emulator, clock).chat(QUESTION)
    assert admin.count("chat_completions") == 4
    assert info.value.retry_after == 1 and info.value.code == "TOO_MANY_REQUESTS"


def test_text_plain_error_is_still_parsed(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.faults(text_plain_errors=True)
    with pytest.raises(BadRequestError) as info:
        make_client(emulator, clock).chat(ChatRequest.ask(QUESTION, ASSISTANT, model="gpt-99"))
    assert info.value.code == "INVALID_ARGUMENT" and "Invalid model" in info.value.message
    assert info.value.request_id is not None
    assert admin.count("chat_completions") == 1  # a 400 is permanent: never retried


def test_dropped_response_is_retried(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"drop": "response"})
    answer = make_client(emulator, clock).chat(QUESTION)
    assert answer.citations
    assert admin.count("chat_completions") == 2


def test_stream_dropped_after_content_is_not_retried_and_keeps_what_arrived(
    emulator: EmulatorServer, admin: Admin, clock: Clock
) -> None:
    admin.script({"drop": "stream", "after_chunks": 6})
    with make_client(emulator, clock).stream(QUESTION) as stream, pytest.raises(StreamBroken) as info:
        list(stream)
    assert info.value.received.startswith("A request over the")
    assert info.value.chunks == 6
    assert admin.count("chat_completions") == 1


def test_stream_dropped_before_first_content_is_reopened(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"drop": "stream", "after_chunks": 1})
    with make_client(emulator, clock).stream(QUESTION) as stream:
        answer = stream.answer()
    assert answer.content.startswith("A request over the limit")
    assert admin.count("chat_completions") == 2


def test_stream_with_done_marker(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.faults(stream_done=True)
    with make_client(emulator, clock).stream(QUESTION) as stream:
        assert stream.answer().citations


def test_slow_first_token_beyond_read_timeout_times_out_and_retries(
    emulator: EmulatorServer, admin: Admin, clock: Clock
) -> None:
    admin.faults(first_token_ms=400)
    client = make_client(emulator, clock, read_timeout=0.1)
    client.policy = RetryPolicy(max_attempts=2)
    with pytest.raises(Timeout):
        client.chat(QUESTION)
    assert admin.count("chat_completions") == 2


def test_not_found_and_auth_errors_are_permanent_and_never_show_the_key(
    emulator: EmulatorServer, admin: Admin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotFoundError):
        make_client(emulator, clock).chat(ChatRequest.ask(QUESTION, "nobody"))
    bad = make_client(emulator, clock, api_key="pcsk_wrong_secret_value")
    with pytest.raises(AuthenticationError) as info:
        bad.chat(QUESTION)
    assert admin.count("describe_assistant", "nobody") == 1
    texts = [str(info.value), repr(info.value), repr(bad), repr(bad.settings), caplog.text]
    assert not any("pcsk_wrong_secret_value" in t or emulator.api_key in t for t in texts)


def test_deadline_too_close_makes_no_call(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    client = make_client(emulator, clock)
    client.host_for(ASSISTANT)
    with pytest.raises(DeadlineExceeded):
        client.chat(QUESTION, deadline=clock() + 1.0)
    assert admin.count("chat_completions") == 0


def test_deadline_stops_retrying_when_the_wait_would_pass_it(
    emulator: EmulatorServer, admin: Admin, clock: Clock
) -> None:
    admin.script({"status": 429, "retry_after": 30})
    with pytest.raises(RateLimitError):
        make_client(emulator, clock).chat(QUESTION, deadline=clock() + 20)
    assert admin.count("chat_completions") == 1
    assert clock.sleeps == []


def test_unreachable_host_is_a_connection_error(clock: Clock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = AssistantClient(
        Settings.from_env({}, api_key="k", assistant_host=f"http://127.0.0.1:{port}", assistant=ASSISTANT),
        policy=RetryPolicy(max_attempts=2),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(ConnectionFailed):
        client.chat(QUESTION)
    assert len(clock.sleeps) == 1


def test_server_error_exhausts_into_server_error(emulator: EmulatorServer, admin: Admin, clock: Clock) -> None:
    admin.script({"status": 500, "count": 4})
    with pytest.raises(ServerError):
        make_client(emulator, clock).chat(QUESTION)
    assert admin.count("chat_completions") == 4
