from __future__ import annotations

import pytest

from infra.emulator.answers import Answer, Citation, Reference, content_tokens, marked_content, marker

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


def test_2024_style_uses_two_spaces_and_glued_pages() -> None:
    assert marked_content(_answer(), "p").startswith("Kettles boil fast  [1, p.2].")


def test_stream_tokens_rebuild_content_and_keep_markers_whole() -> None:
    tokens = list(content_tokens(_answer()))
    assert "".join(tokens) == marked_content(_answer())
    assert " [1, pp. 2]" in tokens
    assert " [2][1, pp. 1, 2]" in tokens


def test_answer_without_citations_has_no_references() -> None:
    assert marked_content(Answer("i", "m", "Nothing found.")) == "Nothing found."
