"""What the client makes of bodies and transport failures, with the transport swapped for a canned adapter:
a 200 it cannot read is its own error and is not re-asked in-process; transport errors keep their cause."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.errors import ConnectionFailed, MalformedResponse, StreamBroken, Timeout, TruncatedResponse
from citeq.retry import RetryPolicy

HOST = "http://assistant.test"
COMPLETION = {
    "id": "c1",
    "model": "gpt-4o",
    "choices": [{"message": {"role": "assistant", "content": "Wait [1, pp. 2]."}, "finish_reason": "stop"}],
}


class BrokenRaw:
    """A response body that yields ``chunks`` and then drops the connection."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def read(self, amount: int | None = None, **_: Any) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        raise requests.ConnectionError("connection reset by peer")

    def close(self) -> None:
        """Nothing to close."""


class Canned(BaseAdapter):
    """Answers every request with the same status and body, or raises ``raises``; counts the calls."""

    def __init__(
        self, body: bytes = b"", *, status: int = 200, raises: Exception | None = None, raw: Any = None
    ) -> None:
        super().__init__()
        self.body = body
        self.status = status
        self.raises = raises
        self.raw = raw
        self.calls = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        response = requests.Response()
        response.status_code = self.status
        response.headers = CaseInsensitiveDict({"content-type": "application/json"})
        response.url = str(request.url)
        response.request = request
        if self.raw is not None:
            response.raw = self.raw
        else:
            response._content = self.body
        return response

    def close(self) -> None:
        """Nothing pooled."""


def client_with(adapter: Canned, sleeps: list[float], **settings: Any) -> AssistantClient:
    session = requests.Session()
    session.mount("http://", adapter)
    values: dict[str, Any] = {"api_key": "pcsk-test", "assistant": "a", "assistant_host": HOST, **settings}
    return AssistantClient(
        Settings.from_env({}, **values), session=session, policy=RetryPolicy(max_attempts=4), sleep=sleeps.append
    )


@pytest.fixture
def sleeps() -> Iterator[list[float]]:
    yield []


def test_chat_with_a_body_that_is_not_json_is_truncated_response_asked_once(sleeps: list[float]) -> None:
    adapter = Canned(b'{"id": "c1", "choices": [{"mess')
    with pytest.raises(TruncatedResponse) as raised:
        client_with(adapter, sleeps).chat("q")
    assert adapter.calls == 1 and sleeps == []
    assert raised.value.retryable  # the worker hands it back; the client does not re-ask
    assert isinstance(raised.value.__cause__, ValueError)


@pytest.mark.parametrize("body", [{"id": "c1"}, {"choices": []}, {"choices": [{"message": None}]}, [1, 2]])
def test_chat_with_json_of_the_wrong_shape_is_a_permanent_malformed_response(
    sleeps: list[float], body: object
) -> None:
    adapter = Canned(json.dumps(body).encode())
    with pytest.raises(MalformedResponse) as raised:
        client_with(adapter, sleeps).chat("q")
    assert type(raised.value) is MalformedResponse and not raised.value.retryable
    assert adapter.calls == 1 and sleeps == []
    assert isinstance(raised.value.__cause__, KeyError | IndexError | TypeError)


def test_chat_with_a_body_nested_past_the_parser_is_a_permanent_malformed_response(sleeps: list[float]) -> None:
    adapter = Canned(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(MalformedResponse, match="nested too deeply") as raised:
        client_with(adapter, sleeps).chat("q")
    assert type(raised.value) is MalformedResponse and isinstance(raised.value.__cause__, RecursionError)
    assert adapter.calls == 1 and sleeps == []


def test_chat_with_a_well_formed_body_is_an_answer(sleeps: list[float]) -> None:
    answer = client_with(Canned(json.dumps(COMPLETION).encode()), sleeps).chat("q")
    assert answer.content == "Wait." and answer.citations[0].position == 4


def test_describe_answering_a_body_that_is_not_json_is_truncated_response(sleeps: list[float]) -> None:
    adapter = Canned(b"<html>gateway</html>")
    client = client_with(adapter, sleeps, assistant_host=None, pinecone_host=HOST)
    with pytest.raises(TruncatedResponse, match="describe assistant 'a'"):
        client.chat("q")
    assert adapter.calls == 1


@pytest.mark.parametrize(
    ("raises", "expected"),
    [(requests.ConnectionError("refused"), ConnectionFailed), (requests.ReadTimeout("slow"), Timeout)],
)
def test_transport_errors_are_retried_and_chained_to_the_requests_error(
    sleeps: list[float], raises: requests.RequestException, expected: type[Exception]
) -> None:
    adapter = Canned(raises=raises)
    with pytest.raises(expected) as raised:
        client_with(adapter, sleeps).chat("q")
    assert adapter.calls == 4 and len(sleeps) == 3
    assert raised.value.__cause__ is raises


def test_a_stream_broken_after_content_chains_the_transport_error(sleeps: list[float]) -> None:
    chunk = {"id": "c1", "model": "gpt-4o", "choices": [{"delta": {"role": "assistant", "content": "Wait"}}]}
    adapter = Canned(raw=BrokenRaw([f"data: {json.dumps(chunk)}\n\n".encode()]))
    with pytest.raises(StreamBroken) as raised, client_with(adapter, sleeps).stream("q") as stream:
        stream.answer()
    assert raised.value.received == "Wait"
    cause = raised.value.__cause__
    assert isinstance(cause, ConnectionFailed) and isinstance(cause.__cause__, requests.ConnectionError)


@pytest.mark.parametrize("body", [{"id": "s1"}, {"message": {"content": "x"}, "citations": [{"position": "?"}]}])
def test_a_standard_chat_answer_of_the_wrong_shape_is_a_malformed_response(
    sleeps: list[float], body: object
) -> None:
    from citeq.models import ChatRequest

    adapter = Canned(json.dumps(body).encode())
    request = ChatRequest.ask("q", "a", context_options={"top_k": 2})
    with pytest.raises(MalformedResponse) as raised:
        client_with(adapter, sleeps).chat(request)
    assert type(raised.value) is MalformedResponse and adapter.calls == 1 and sleeps == []
    assert raised.value.__cause__ is not None
