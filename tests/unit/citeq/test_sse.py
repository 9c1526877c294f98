from __future__ import annotations

import pytest

from citeq.sse import LineDecoder, ServerSentEvent, SSEDecoder, encode


def _decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    events += decoder.close_events()
    return events


@pytest.mark.parametrize(
    ("chunks", "data"),
    [
        ((b'data:{"a":1}\n\n',), ['{"a":1}']),
        ((b'data: {"a":1}\n\n',), ['{"a":1}']),
        ((b"data:  two spaces\n\n",), [" two spaces"]),
        ((b": heartbeat\n\ndata: x\n\n",), ["x"]),
        ((b"data: x\r\n\r\ndata: y\r\r",), ["x", "y"]),
        ((b"data: x\r", b"\n\r\n"), ["x"]),
        ((b"data: a\ndata: b\n\n",), ["a\nb"]),
        ((b"\n\n\ndata: x\n\n",), ["x"]),
        ((b"data: [DONE]\n\n",), ["[DONE]"]),
        ((b"data\n\n",), [""]),
        ((b"\xef\xbb\xbfdata: bom\n\n",), ["bom"]),
        ((b"foo: bar\nunknown\ndata: kept\n\n",), ["kept"]),
        ((b"data: no blank line at end\n",), []),
    ],
    ids=[
        "no-space",
        "space",
        "one-space-stripped",
        "comment",
        "crlf-and-cr",
        "cr-lf-split",
        "multi-line",
        "blank-lines",
        "done",
        "field-without-colon",
        "bom",
        "unknown-fields",
        "incomplete-at-eof",
    ],
)
def test_whatwg_rules(chunks: tuple[bytes, ...], data: list[str]) -> None:
    assert [e.data for e in _decode(*chunks)] == data


def test_utf8_split_across_chunks() -> None:
    raw = "data: café ☕ 日本\n\n".encode()
    for cut in range(1, len(raw)):
        assert [e.data for e in _decode(raw[:cut], raw[cut:])] == ["café ☕ 日本"]


def test_id_event_retry_fields() -> None:
    (event,) = _decode(b"id: 7\nevent: status\nretry: 1500\ndata: queued\n\n")
    assert (event.id, event.event, event.retry, event.data) == ("7", "status", 1500, "queued")


def test_incomplete_event_is_reported_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: half") == []
    assert decoder.close() is True


def test_encode_round_trips() -> None:
    wire = encode("line one\nline two", event="answer", id="3")
    (event,) = _decode(wire)
    assert (event.data, event.event, event.id) == ("line one\nline two", "answer", "3")


def test_line_decoder_keeps_partial_line() -> None:
    lines = LineDecoder()
    assert lines.feed(b"abc") == []
    assert lines.feed(b"def\nghi") == ["abcdef"]
    assert lines.close() == ([], "ghi")
