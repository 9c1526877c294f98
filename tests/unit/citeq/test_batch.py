from __future__ import annotations

import json
from pathlib import Path

import pytest

from citeq.batch import InvalidInput, Parsed, parse, read, submit
from citeq.errors import ValidationError
from citeq.models import MAX_QUESTION_BYTES


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
    assert (first.request.custom_id, first.number, first.request.assistant) == ("a", 1, "main")
    assert first.request.chat.options.to_dict() == {"model": "gpt-4o", "temperature": 0.2, "filter": {"k": "v"}}
    assert first.request.callback_url == "https://example.com/cb"
    assert (second.request.custom_id, second.number, second.request.assistant) == ("b", 3, "other-one")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ('{"custom_id": "x", "question": "q"', "not valid JSON"),
        ('["not", "an", "object"]', "must be a JSON object"),
        ({"question": "q"}, "custom_id is required"),
        ({"custom_id": 1, "question": "q"}, "custom_id must be a non-empty string"),  # there, but not text
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
    assert [i.request.custom_id for i in parsed.items] == ["a"]
    assert parsed.items[0].request.chat.options.to_dict() == {"temperature": 0.5, "filter": {"kind": "manual"}}
    assert parsed.items[0].request.metadata == {"team": "ops"}
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (3, "give exactly one of question or messages"),
        (4, "temperature must be a number"),
    ]


def test_csv_without_custom_id_header() -> None:
    assert "custom_id column" in parse("question\nq\n", fmt="csv", default_assistant="m").errors[0].reason


def test_read_picks_format_from_extension_and_reports_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("custom_id,question\na,q?\n")
    assert [i.request.custom_id for i in read(path, default_assistant="m").items] == ["a"]
    with pytest.raises(ValidationError, match="cannot read"):
        read(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"custom_id": "a", "question": "ok"}\n{"custom_id": "b", "question": "caf\xe9"}\n')
    with pytest.raises(ValidationError, match=r"^line 2: not UTF-8 \(byte 0xe9\)"):
        read(latin)


def test_submit_refuses_any_bad_line_unless_skipping() -> None:
    parsed = parse(_jsonl({"custom_id": "a", "question": "1"}, {"custom_id": "b"}), fmt="jsonl", default_assistant="m")
    with pytest.raises(InvalidInput) as info:
        submit(parsed, store=None)  # type: ignore[arg-type]
    assert "nothing was submitted" in str(info.value) and "line 2" in str(info.value)


def test_empty_input_is_an_error() -> None:
    assert parse("\n\n", fmt="jsonl", default_assistant="m").errors[0].reason == "the input has no items"
    with pytest.raises(InvalidInput):
        submit(Parsed(), store=None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ issue 11: input edges
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"])
def test_jsonl_only_newline_ends_a_record_and_line_numbers_stay_right(separator: str) -> None:
    # Raw inside a JSON string (where JSON allows it) or between tokens (where JSON allows \r as whitespace).
    inside = json.dumps({"custom_id": "a", "question": f"one{separator}two"}, ensure_ascii=False)
    if separator in "\x0b\x0c\x1c\x1d\x1e":  # control characters are not allowed raw in a JSON string
        inside = json.dumps({"custom_id": "a", "question": f"one{separator}two"})
    if separator == "\r":
        inside = '{"custom_id": "a",\r"question": "one two"}'
    text = inside + "\n" + json.dumps({"custom_id": "b", "question": "x"}) + "\n" + '{"custom_id": "c"}\n'
    parsed = parse(text, fmt="jsonl", default_assistant="m")
    assert [(i.request.custom_id, i.number) for i in parsed.items] == [("a", 1), ("b", 2)]
    assert [e.line for e in parsed.errors] == [3]


def test_jsonl_with_crlf_line_ends_and_a_bom() -> None:
    text = "\ufeff" + json.dumps({"custom_id": "a", "question": "q"}) + "\r\n\r\n" + '{"custom_id": "b"}\r\n'
    parsed = parse(text, fmt="jsonl", default_assistant="m")
    assert [i.number for i in parsed.items] == [1] and [e.line for e in parsed.errors] == [3]


@pytest.mark.parametrize(
    ("line", "where", "char"),
    [
        ('{"custom_id": "a", "question": "hi \\ud83d there"}', "question", "U+D83D"),
        ('{"custom_id": "a", "question": "x\\udc00"}', "question", "U+DC00"),
        ('{"custom_id": "a", "question": "q", "metadata": {"k": "v\\ufffe"}}', "metadata.k", "U+FFFE"),
        ('{"custom_id": "a", "question": "q", "metadata": {"\\uffff": 1}}', "metadata", "U+FFFF"),
        ('{"custom_id": "\\ud800", "question": "q"}', "custom_id", "U+D800"),
        ('{"custom_id": "a", "messages": [{"content": "\\udfff"}]}', "messages.[0].content", "U+DFFF"),
    ],
)
def test_text_that_cannot_travel_is_a_line_error_naming_field_and_character(line: str, where: str, char: str) -> None:
    good = json.dumps({"custom_id": "ok", "question": "fine 😀 \ufdd0 \x00"})
    parsed = parse(good + "\n" + line + "\n", fmt="jsonl", default_assistant="m")
    assert [i.request.custom_id for i in parsed.items] == ["ok"]
    [error] = parsed.errors
    assert error.line == 2 and where in error.reason and char in error.reason
    with pytest.raises(InvalidInput) as info:
        submit(parsed, store=None)  # type: ignore[arg-type]  # refused before any write
    assert "line 2" in str(info.value)


def test_the_whole_stored_input_is_bounded_not_only_the_question() -> None:
    from citeq.models import MAX_INPUT_BYTES

    big = {"custom_id": "a", "question": "q", "metadata": {"blob": "x" * 420_000}}
    parsed = parse(json.dumps(big), fmt="jsonl", default_assistant="m")
    assert "metadata and options" in parsed.errors[0].reason and f"{MAX_INPUT_BYTES:,}" in parsed.errors[0].reason
    split = {"custom_id": "a", "question": "q" * 150_000, "filter": {"k": "x" * 60_000}}
    assert "400 KB DynamoDB item" in parse(json.dumps(split), fmt="jsonl", default_assistant="m").errors[0].reason


def test_deeply_nested_json_is_a_line_error_not_a_recursion_error() -> None:
    deep = '{"custom_id": "a", "question": "q", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    parsed = parse(deep, fmt="jsonl", default_assistant="m")
    assert "nested more than" in parsed.errors[0].reason


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/cb", "non-public address"),
        ("https://10.0.0.5/cb", "non-public address"),
        ("https://hooks.example.com:25/", "port"),
        ("https://example.com\\@127.0.0.1/", "backslash"),
        ("gopher://example.com/", "http(s)"),
    ],
)
def test_internal_or_malformed_callback_urls_are_refused_at_intake(url: str, why: str) -> None:
    line = json.dumps({"custom_id": "a", "question": "q", "callback_url": url})
    parsed = parse(line, fmt="jsonl", default_assistant="m")
    assert why in parsed.errors[0].reason and parsed.errors[0].reason.startswith("callback_url")


def test_allow_listed_callback_hosts_pass_intake() -> None:
    text = json.dumps({"custom_id": "a", "question": "q", "callback_url": "http://127.0.0.1:4567/cb"})
    assert parse(text, fmt="jsonl", default_assistant="m", callback_allow_hosts=("127.0.0.1",)).errors == []


def test_csv_rows_of_empty_cells_are_skipped_like_blank_lines() -> None:
    text = "custom_id,question,team\r\n,,\r\na,Q?,ops\r\n\r\n , ,\r\nb,Q2?,\r\n,,\r\n"
    parsed = parse(text, fmt="csv", default_assistant="m")
    assert parsed.errors == [] and [(i.request.custom_id, i.number) for i in parsed.items] == [("a", 3), ("b", 6)]


def test_csv_line_numbers_count_from_where_a_multiline_cell_starts() -> None:
    text = 'custom_id,question\na,"line one\nline two"\nb,\n'
    parsed = parse(text, fmt="csv", default_assistant="m")
    assert [i.number for i in parsed.items] == [2] and [e.line for e in parsed.errors] == [4]
    assert parsed.items[0].request.chat.messages[0].content == "line one\nline two"


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("custom_id,question,question", "column 3 repeats the name 'question' of column 2"),
        ("custom_id,,question", "column 2 has no name"),
        ("custom_id,question, ", "column 3 has no name"),
        ("id,question", "custom_id column"),
        ("custom_id,team,team", "repeats the name 'team'"),
    ],
)
def test_csv_header_problems_are_reported_never_resolved_silently(header: str, why: str) -> None:
    parsed = parse(f"{header}\na,q,r\n", fmt="csv", default_assistant="m")
    assert parsed.items == [] and why in parsed.errors[0].reason and parsed.errors[0].line == 1


def test_csv_with_a_bom_and_leading_empty_rows_finds_its_header() -> None:
    parsed = parse("\ufeff,,\ncustom_id,question\na,q\n", fmt="csv", default_assistant="m")
    assert [(i.request.custom_id, i.number) for i in parsed.items] == [("a", 3)]


def test_csv_extra_cells_and_bad_json_cells_are_line_errors() -> None:
    text = 'custom_id,question,metadata\na,q,{"k": 1},extra\nb,q,"[[[["\nc,q,,,\n'
    parsed = parse(text, fmt="csv", default_assistant="m")
    assert [i.request.custom_id for i in parsed.items] == ["c"]
    assert [(e.line, e.reason.split(":")[0]) for e in parsed.errors] == [
        (2, "row has more cells than the header"),
        (3, "the metadata cell"),
    ]


def test_csv_metadata_cell_not_an_object_beside_extra_columns_is_a_line_error() -> None:
    text = 'custom_id,question,metadata,team\na,q,[1],ops\nb,q,"""s""",ops\nc,q,"{""k"": 1}",ops\nd,q,,ops\n'
    parsed = parse(text, fmt="csv", default_assistant="m")
    assert [(e.line, e.reason) for e in parsed.errors] == [
        (2, "metadata must be a JSON object"),
        (3, "metadata must be a JSON object"),
    ]
    assert [i.request.metadata for i in parsed.items] == [{"team": "ops", "k": 1}, {"team": "ops"}]


def test_csv_a_cell_for_every_option_is_read_as_a_jsonl_line_is() -> None:
    csv_text = (
        "custom_id,question,assistant,model,temperature,filter,context_options,callback_url\n"
        'a,q,main,gpt-4o,0.5,"{""kind"": ""manual""}","{""top_k"": 4, ""multimodal"": false}",https://h.example.com/x\n'
    )
    jsonl = (
        '{"custom_id": "a", "question": "q", "assistant": "main", "model": "gpt-4o", "temperature": 0.5, '
        '"filter": {"kind": "manual"}, "context_options": {"top_k": 4, "multimodal": false}, '
        '"callback_url": "https://h.example.com/x"}'
    )
    [from_csv] = parse(csv_text, fmt="csv", default_assistant="m").items
    [from_jsonl] = parse(jsonl, fmt="jsonl", default_assistant="m").items
    assert from_csv.request == from_jsonl.request and from_csv.request.chat.endpoint == ""
