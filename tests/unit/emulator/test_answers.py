from __future__ import annotations

import pytest

from infra.emulator.answers import (
    WIRES,
    Answer,
    Citation,
    Reference,
    completion_chunks,
    content_tokens,
    marked_content,
    marker,
)

PDF = {"id": "f1", "name": "guide.pdf", "signed_url": "https://x/guide.pdf?X-Goog-Expires=3600"}
TXT = {"id": "f2", "name": "notes.txt", "signed_url": "https://x/notes.txt?X-Goog-Expires=3600"}


@pytest.mark.parametrize(
    ("pages", "style", "expected"),
    [
        ([3], "pp", "[1, pp. 3]"),
        ([1, 2, 4], "pp", "[1, pp. 1, 2, 4]"),
        ([1, 2, 4], "p", "[1, p.1-2, 4]"),
        ([1, 3], "p", "[1, p.1, 3]"),
        (None, "pp", "[1]"),
        ([], "p", "[1]"),
    ],
)
def test_marker_styles(pages: list[int] | None, style: str, expected: str) -> None:
    assert marker(1, pages, style) == expected


def _answer() -> Answer:
    content = "Kettles boil fast. Notes are kept."
    return Answer(
        "0" * 32,
        "gpt-4o",
        content,
        [Citation(17, [Reference(PDF, [2])]), Citation(33, [Reference(TXT, None), Reference(PDF, [1, 2])])],
    )


def test_marked_content_numbers_files_by_first_citation_and_lists_references() -> None:
    assert marked_content(_answer()) == (
        "Kettles boil fast [1, pp. 2]. Notes are kept [2][1, pp. 1, 2].\n\nReferences:\n"
        "1. [guide.pdf](https://x/guide.pdf?X-Goog-Expires=3600) \n"
        "2. [notes.txt](https://x/notes.txt?X-Goog-Expires=3600) \n"
    )


def test_2024_wire_uses_two_spaces_and_glued_pages() -> None:
    assert marked_content(_answer(), WIRES["2024"]) == (
        "Kettles boil fast  [1, p.2]. Notes are kept  [2][1, p.1-2].\n\nReferences:\n"
        "1. [guide.pdf](https://x/guide.pdf?X-Goog-Expires=3600)\n"
        "2. [notes.txt](https://x/notes.txt?X-Goog-Expires=3600)\n"
    )


def test_2025_wire_puts_two_spaces_only_before_a_marker_without_pages() -> None:
    assert marked_content(_answer(), WIRES["2025"]).startswith(
        "Kettles boil fast [1, pp. 2]. Notes are kept  [2][1, pp. 1, 2].\n\nReferences:\n"
    )


def test_2024_wire_answer_without_citations_ends_in_an_empty_references_trailer() -> None:
    answer = Answer("i", "m", "Nothing found.")
    assert marked_content(answer, WIRES["2024"]) == "Nothing found.\n\nReferences:\n"
    contents = [c["choices"][0]["delta"] for c in completion_chunks(answer, WIRES["2024"]) if c["choices"]]
    assert contents[-2] == {"role": None, "content": "\n\nReferences:\n"}
    assert contents[-1] is None


@pytest.mark.parametrize(("wire", "finish"), [("2024", None), ("2025", {"role": None, "content": None})])
def test_stream_finish_chunk_delta_per_wire(wire: str, finish: dict[str, None] | None) -> None:
    chunks = list(completion_chunks(_answer(), WIRES[wire]))
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": finish, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == []
    assert ("usage" in chunks[1]) is (wire == "2024")


def test_stream_tokens_rebuild_content_and_keep_markers_whole() -> None:
    tokens = list(content_tokens(_answer()))
    assert "".join(tokens) == marked_content(_answer())
    assert " [1, pp. 2]" in tokens
    assert " [2][1, pp. 1, 2]" in tokens


def test_answer_without_citations_has_no_references() -> None:
    assert marked_content(Answer("i", "m", "Nothing found.")) == "Nothing found."
