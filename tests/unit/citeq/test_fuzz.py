"""Hypothesis fuzzing of every parser that reads outside input (issue 11): whatever arrives, each returns a value
or raises its one clear error type, never anything else."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citeq.batch import parse
from citeq.callbacks import UnsafeURL, check_url, check_url_at_intake, parse_url
from citeq.citations import IncrementalParser, parse_content
from citeq.client import error_event, parse_chunk
from citeq.errors import APIStatusError, ValidationError, WebhookError
from citeq.messages import decode, encode
from citeq.sse import SSEDecoder
from citeq.text import loads
from citeq.webhooks import sign, verify, verify_sender

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = "whsec_" + base64.b64encode(random.Random(5).randbytes(32)).decode()

# Text with the characters that break parsers: every line end, surrogates, non-characters, quotes, brackets.
tricky = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from(list('\n\r\u2028\u2029\x85\x0b\x0c,;"{}[]:\\\ud800\udfff\ufffe\uffff\x00\t=@+-')),
    ),
    max_size=300,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tricky,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky, children, max_size=4),
    max_leaves=20,
)
fields = st.sampled_from(
    ["custom_id", "question", "messages", "assistant", "model", "temperature", "filter", "metadata", "callback_url"]
)
records = st.dictionaries(fields, json_values, max_size=6)


def _line(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False)
    except (UnicodeEncodeError, ValueError):
        return json.dumps(record)


@FUZZ
@given(st.lists(st.one_of(records.map(_line), tricky), max_size=8))
def test_jsonl_parser_reports_every_bad_line_and_never_raises(lines: list[str]) -> None:
    parsed = parse("\n".join(lines), fmt="jsonl", default_assistant="main")
    assert all(error.line >= 1 and error.reason for error in parsed.errors)
    assert parsed.items or parsed.errors
    for line in parsed.items:
        encode(line.request).encode()  # it can travel


@FUZZ
@given(
    st.lists(st.sampled_from(["custom_id", "question", "metadata", "temperature", "team", "", "question"]), max_size=5),
    st.lists(st.lists(tricky, max_size=6), max_size=6),
)
def test_csv_parser_reports_every_bad_row_and_never_raises(header: list[str], rows: list[list[str]]) -> None:
    text = "\r\n".join([",".join(header), *(",".join(row) for row in rows)])
    parsed = parse(text, fmt="csv", default_assistant="main")
    assert all(error.line >= 1 and error.reason for error in parsed.errors)


@FUZZ
@given(st.one_of(tricky, records.map(lambda r: _line({"v": 1, "request_id": "r", **r}))))
def test_message_decoder_returns_a_message_or_a_validation_error(body: str) -> None:
    with contextlib.suppress(ValidationError):
        decode(body)


@FUZZ
@given(st.integers(0, 5000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
def test_deep_nesting_is_a_validation_error(depth: int, opener: str) -> None:
    with contextlib.suppress(ValidationError):
        loads(opener * depth)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_sse_decoder_never_raises_on_any_bytes(chunks: list[bytes]) -> None:
    decoder = SSEDecoder()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            # Whatever an event holds, the chunk and error readers give a chunk, None or the service's error.
            typed = parse_chunk(event.data)
            assert typed is None or typed.raw == event.data
            failure = error_event(event.data, event.event)
            assert failure is None or isinstance(failure, APIStatusError)
    decoder.close_events()
    assert isinstance(decoder.close(), bool)


@FUZZ
@given(tricky, st.lists(st.integers(0, 300), max_size=10))
def test_citation_parser_never_raises(content: str, cuts: list[int]) -> None:
    parse_content(content)
    incremental = IncrementalParser(keep_text=True)
    start = 0
    for cut in sorted(cuts):
        incremental.feed(content[start:cut])
        start = max(start, cut)
    incremental.feed(content[start:])
    incremental.finish()


header_values = st.text(alphabet=st.characters(), max_size=80)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Webhook-Id", "x"]),
        header_values,
        max_size=4,
    ),
    st.binary(max_size=200),
)
def test_webhook_verifier_returns_an_id_or_a_webhook_error(headers: dict[str, str], body: bytes) -> None:
    with contextlib.suppress(WebhookError):
        verify_sender([("a", SECRET)], headers, body, now=1_700_000_000)


@FUZZ
@given(st.binary(max_size=200), st.text(alphabet=string.ascii_letters, min_size=1, max_size=20))
def test_webhook_verifier_accepts_what_it_signs(body: bytes, msg_id: str) -> None:
    assert verify([SECRET], sign(SECRET, msg_id, 1_700_000_000, body), body, now=1_700_000_000) == msg_id


url_parts = st.one_of(
    tricky,
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", "javascript", ""]),
        st.one_of(
            st.sampled_from(["example.com", "127.0.0.1", "[::1]", "localhost", "0x7f.1", "a\\b", "u@h", "%31", ""]),
            tricky,
        ),
        st.sampled_from(["", ":443", ":0", ":99999", ":abc", ":"]),
        st.one_of(st.sampled_from(["/", "/a?b=c", "", "#f", "/\\"]), tricky),
    ),
)
addresses = st.one_of(st.ip_addresses().map(str), st.sampled_from(["not-an-ip", "", "fe80::1%eth0"]))


@FUZZ
@given(url_parts, st.lists(addresses, max_size=3))
def test_callback_url_guard_returns_an_address_or_refuses_with_unsafe_url(url: str, resolved: list[str]) -> None:
    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        return [(2, 1, 6, "", (address, port)) for address in resolved]

    try:
        parse_url(url)
        check_url_at_intake(url)
    except UnsafeURL:
        pass
    try:
        address = check_url(url, (), resolve)
    except UnsafeURL:
        return
    import ipaddress

    assert ipaddress.ip_address(address).is_global  # whatever passed is public
