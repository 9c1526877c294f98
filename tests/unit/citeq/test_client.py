from __future__ import annotations

import json

import pytest

from citeq.client import parse_chunk


@pytest.mark.parametrize(
    "choice",
    [
        {"index": 0, "delta": None, "finish_reason": "stop"},
        {"index": 0, "finish_reason": "stop"},
    ],
    ids=["null-delta", "no-delta"],
)
def test_parse_chunk_finish_without_a_delta_object_relays_an_empty_one(choice: dict[str, object]) -> None:
    # A 2024 capture ended with "delta": null, which openai-SDK clients cannot read (issue 12).
    data = json.dumps({"id": "x", "choices": [choice], "model": "m", "usage": None})
    chunk = parse_chunk(data)
    assert chunk is not None and chunk.finish_reason == "stop" and chunk.content is None
    assert chunk.raw is not None
    assert json.loads(chunk.raw)["choices"][0]["delta"] == {}


def test_parse_chunk_relays_a_well_formed_chunk_byte_for_byte() -> None:
    data = '{"id":"x","choices":[{"index":0,"delta":{"role":null,"content":" word"}}]}'
    chunk = parse_chunk(data)
    assert chunk is not None and chunk.content == " word" and chunk.role is None
    assert chunk.raw == data


def test_parse_chunk_skips_what_is_not_a_json_chunk() -> None:
    assert parse_chunk("not json") is None
