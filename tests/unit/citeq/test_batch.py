from __future__ import annotations

import json
from pathlib import Path

import pytest

from citeq.batch import MAX_QUESTION_BYTES, InvalidInput, Parsed, parse, read, submit
from citeq.errors import ValidationError


def _jsonl(*rows: object) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)


def test_valid_jsonl_keeps_input_order_and_fields() -> None:
    parsed = parse(
        _jsonl(
            {
                "custom_id": "a",
                "question": "Q1?",
                "model": "gpt-4o",
                "temperature": 0.2,
                "filter": {"k": "v"},
                "metadata": {"team": "x"},
                "callback_url": "https://example.com/cb",
            },
            "",
            {"custom_id": "b", "messages": [{"role": "user", "content": "Q2?"}], "assistant": "other-one"},
        ),
        fmt="jsonl",
        default_assistant="main",
    )
    assert parsed.errors == []
    first, second = parsed.items
    assert (first.custom_id, first.line, first.assistant) == ("a", 1, "main")
    assert first.options == {"model": "gpt-4o", "temperature": 0.2, "filter": {"k": "v"}}
    assert first.callback_url == "https://example.com/cb"
    assert (second.custom_id, second.line, second.assistant) == ("b", 3, "other-one")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('{"custom_id": "x", "question": "q"', "not valid JSON"),
        ('["not", "an", "object"]', "must be a JSON object"),
        ({"question": "q"}, "custom_id is required"),
        ({"custom_id": "x"}, "exactly one of question or messages"),
        ({"custom_id": "x", "question": "q", "messages": [{"content": "m"}]}, "exactly one of question or messages"),
        ({"custom_id": "x", "question": "   "}, "non-empty string"),
        ({"custom_id": "x", "messages": []}, "non-empty list"),
        ({"custom_id": "x", "messages": [{"role": "robot", "content": "m"}]}, "role"),
        # The service refuses "system" (issue 12): refused at submission, not by a failed answer later.
        ({"custom_id": "x", "messages": [{"role": "system", "content": "m"}, {"content": "q"}]}, "role"),
        ({"custom_id": "x", "question": "q", "temperature": 7}, "temperature"),
        ({"custom_id": "x", "question": "q", "filter": "kind=manual"}, "filter must be a JSON object"),
        ({"custom_id": "x", "question": "q", "assistant": "Bad_Name"}, "not valid"),
        ({"custom_id": "x", "question": "q", "colour": "red"}, "unknown field(s): colour"),
        ({"custom_id": "x", "question": "q", "callback_url": "ftp://x"}, "callback_url"),
        ({"custom_id": "x", "question": "x" * (MAX_QUESTION_BYTES + 1)}, "one SQS message"),
    ],
)
def test_every_bad_line_is_reported_with_its_number_and_reason(row: object, reason: str) -> None:
    parsed = parse(_jsonl({"custom_id": "ok", "question": "fine"}, row), fmt="jsonl", default_assistant="main")
    assert [e.line for e in parsed.errors] == [2]
    assert reason in parsed.errors[0].reason


def test_duplicate_custom_id_names_the_first_line() -> None:
    parsed = parse(
        _jsonl({"custom_id": "a", "question": "1"}, {"custom_id": "a", "question": "2"}),
        fmt="jsonl",
        default_assistant="main",
    )
    assert str(parsed.errors[0]) == "line 2: custom_id 'a' already used on line 1"


def test_missing_assistant_is_a_line_error() -> None:
    parsed = parse(_jsonl({"custom_id": "a", "question": "1"}), fmt="jsonl", default_assistant=None)
    assert "no assistant" in parsed.errors[0].reason


def test_csv_columns_json_cells_and_extra_columns_as_metadata() -> None:
    text = (
        "custom_id,question,temperature,filter,team\n"
        'a,What is PTO?,0.5,"{""kind"": ""manual""}",ops\n'
        "b,,,,\n"
        "c,Bad temperature?,hot,,\n"
    )
    parsed = parse(text, fmt="csv", default_assistant="main")
    assert [i.custom_id for i in parsed.items] == ["a"]
    assert parsed.items[0].options == {"temperature": 0.5, "filter": {"kind": "manual"}}
    assert parsed.items[0].metadata == {"team": "ops"}
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, "give exactly one of question or messages"),
        (4, "temperature must be a number"),
    ]


def test_csv_without_custom_id_header() -> None:
    assert "custom_id column" in parse("question\nq\n", fmt="csv", default_assistant="m").errors[0].reason


def test_read_picks_format_from_extension_and_reports_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("custom_id,question\na,q?\n")
    assert [i.custom_id for i in read(path, default_assistant="m").items] == ["a"]
    with pytest.raises(ValidationError, match="cannot read"):
        read(tmp_path / "missing.jsonl")


def test_submit_refuses_any_bad_line_unless_skipping() -> None:
    parsed = parse(_jsonl({"custom_id": "a", "question": "1"}, {"custom_id": "b"}), fmt="jsonl", default_assistant="m")
    with pytest.raises(InvalidInput) as info:
        submit(parsed, store=None)  # type: ignore[arg-type]
    assert "nothing was submitted" in str(info.value) and "line 2" in str(info.value)


def test_empty_input_is_an_error() -> None:
    assert parse("\n\n", fmt="jsonl", default_assistant="m").errors[0].reason == "the input has no items"
    with pytest.raises(InvalidInput):
        submit(Parsed(), store=None)  # type: ignore[arg-type]
