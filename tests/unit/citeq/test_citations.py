from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citeq.citations import (
    IncrementalParser,
    MarkerFound,
    TextDelta,
    file_id_from_url,
    parse_content,
    parse_pages,
    render_content,
    url_expiry,
)
from citeq.models import Citation, FileRef, ParsedContent, Reference

URL = (
    "https://storage.googleapis.com/knowledge-prod-files/org%2Fasst%2F"
    "1b4e28ba-2fa1-11d2-883f-0016d3cca427.pdf?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    "&X-Goog-Date=20250115T101500Z&X-Goog-Expires=3600&X-Goog-Signature=abc"
)
NOTES = "https://x/notes.txt?X-Goog-Date=20250115T101500Z&X-Goog-Expires=60"
REFS = f"\n\nReferences:\n1. [guide.pdf]({URL}) \n2. [notes.txt]({NOTES}) \n"


def _cites(content: str) -> list[tuple[int, list[tuple[int | None, tuple[int, ...]]]]]:
    parsed = parse_content(content)
    return [
        (
            c.position,
            [
                (r.missing_reference if r.file is None else parsed.files.index(r.file) + 1, r.pages)
                for r in c.references
            ],
        )
        for c in parsed.citations
    ]


@pytest.mark.parametrize(
    ("content", "text", "cites"),
    [
        ("Kettles boil [1, pp. 1].", "Kettles boil.", [(12, [(1, (1,))])]),
        ("Kettles boil  [1, p.1-2, 4].", "Kettles boil.", [(12, [(1, (1, 2, 4))])]),
        ("Kettles boil [1, p.1, 3][2, p.2].", "Kettles boil.", [(12, [(1, (1, 3)), (2, (2,))])]),
        ("Kettles boil [2].", "Kettles boil.", [(12, [(2, ())])]),
        ("Kettles boil. [1, pp. 1]", "Kettles boil.", [(13, [(1, (1,))])]),
        ("Kettles boil.[1]", "Kettles boil.", [(13, [(1, ())])]),
        ("A [1, pp. 3–5] b", "A b", [(1, [(1, (3, 4, 5))])]),
        ("A [1, pp.  2 , 7] b", "A b", [(1, [(1, (2, 7))])]),
    ],
    ids=["pp", "2024-p-range", "adjacent", "no-pages", "after-period", "glued-after-period", "en-dash", "spaces"],
)
def test_parse_every_service_form(content: str, text: str, cites: list) -> None:
    assert parse_content(content + REFS).text == text
    assert _cites(content + REFS) == cites


@pytest.mark.parametrize(
    "content",
    [
        "He said [sic] nothing.",
        "Use array[0] and matrix[1][2] here.",
        "See [the docs](https://example.com) and [1](https://example.com/1).",
        "[1]: https://example.com/footnote",
        "Inline `x = y[1]` and `[2, pp. 3]` stay.",
        "```python\nitems[1]\nvalue = [1, pp. 2]\n```\nafter",
        "Zero [0] is no citation.",
        "Empty [] and [ 1 ] and [1, page 2] stay.",
    ],
    ids=["sic", "indexing", "markdown-links", "link-definition", "inline-code", "fenced-code", "zero", "near-misses"],
)
def test_non_citations_stay_in_text(content: str) -> None:
    parsed = parse_content(content)
    assert parsed.text == content
    assert parsed.citations == ()


def test_references_with_and_without_trailing_spaces_and_no_list() -> None:
    tight = parse_content("A [1]. B [2].\n\nReferences:\n1. [a.md](https://x/a.md)\n2. [b.md](https://x/b.md)")
    assert [f.name for f in tight.files] == ["a.md", "b.md"]
    none = parse_content("A [1].")
    assert none.text == "A."
    assert none.citations[0].references[0] == Reference(None, (), 1)


def test_marker_whose_reference_is_missing_is_flagged_not_fatal() -> None:
    parsed = parse_content("A [1]. B [3, pp. 2]." + REFS)
    missing = parsed.citations[1].references[0]
    assert missing.file is None and missing.missing_reference == 3 and missing.pages == (2,)
    assert parsed.citations[0].references[0].file is not None


def test_text_that_merely_mentions_references_is_not_split() -> None:
    content = "Read this.\n\nReferences:\nnot a list at all\n"
    assert parse_content(content).text == content


@pytest.mark.parametrize("trailer", ["\n\nReferences:\n", "\n\nReferences:\n\n", "\n\nReferences: \n  \n"])
def test_empty_references_trailer_is_not_part_of_the_text(trailer: str) -> None:
    # A 2024 capture: an answer with no citations still ended in a bare References header (issue 12).
    parsed = parse_content("Nothing about that in the files." + trailer)
    assert parsed == ParsedContent("Nothing about that in the files.", (), ())


def test_reference_file_fields_come_from_the_signed_url() -> None:
    file = parse_content("A [1]." + REFS).files[0]
    assert file == FileRef("guide.pdf", URL, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "2025-01-15T11:15:00Z")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "2025-01-15T11:15:00Z"),
        ("https://s3/x?X-Amz-Date=20250101T000000Z&X-Amz-Expires=120", "2025-01-01T00:02:00Z"),
        ("https://gcs/x?Expires=1736935200", "2025-01-15T10:00:00Z"),
        ("https://gcs/x?X-Goog-Date=garbage&X-Goog-Expires=10", None),
        ("https://example.com/plain.pdf", None),
    ],
)
def test_url_expiry(url: str, expected: str | None) -> None:
    assert url_expiry(url) == expected


def test_file_id_absent_when_url_has_none() -> None:
    assert file_id_from_url("https://example.com/guide.pdf") is None


@pytest.mark.parametrize(
    ("text", "pages"),
    [("1", (1,)), ("1-3, 5", (1, 2, 3, 5)), ("2, 2, 1", (2, 1)), ("1-100000", (1, 100000)), (None, ())],
)
def test_parse_pages(text: str | None, pages: tuple[int, ...]) -> None:
    assert parse_pages(text) == pages


# ------------------------------------------------------------------ property tests
_SAFE = st.text(alphabet=string.ascii_letters + " .,;!?'-\n", min_size=0, max_size=40)
_FILES = st.lists(
    st.builds(
        lambda n, i: FileRef(f"file{i}-{n}.pdf", f"https://x/f{i}.pdf"),
        st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6),
        st.integers(0, 99),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda f: f.name,
)


@st.composite
def parsed_answers(draw: st.DrawFn) -> ParsedContent:
    """Clean text (no brackets/backticks), citations at positions after a non-space character."""
    pieces = draw(st.lists(_SAFE, min_size=1, max_size=6))
    files = draw(_FILES)
    text = ""
    citations = []
    for piece in pieces:
        text += piece
        if text and not text[-1].isspace() and draw(st.booleans()):
            refs = draw(st.lists(st.sampled_from(files), min_size=1, max_size=3, unique=True))
            citations.append(
                Citation(
                    len(text),
                    tuple(
                        Reference(f, tuple(draw(st.lists(st.integers(1, 500), max_size=3, unique=True)))) for f in refs
                    ),
                )
            )
    cited = {r.file for c in citations for r in c.references}
    ordered = []
    for c in citations:
        for r in c.references:
            if r.file not in ordered:
                ordered.append(r.file)
    assert set(ordered) == cited
    return ParsedContent(text.rstrip("\n ") if not citations else text, tuple(citations), tuple(ordered))


@given(parsed_answers())
@settings(max_examples=300, deadline=None)
def test_round_trip_parse_of_render_is_identity(parsed: ParsedContent) -> None:
    assert parse_content(render_content(parsed)) == parsed


@given(parsed_answers())
@settings(max_examples=300, deadline=None)
def test_round_trip_render_of_parse_is_identity(parsed: ParsedContent) -> None:
    content = render_content(parsed)
    assert render_content(parse_content(content)) == content


def _feed_in(content: str, cuts: list[int], keep_text: bool = True) -> tuple[str, list[MarkerFound], ParsedContent]:
    parser = IncrementalParser(keep_text=keep_text)
    points = sorted({c % (len(content) + 1) for c in cuts} | {0, len(content)})
    events = []
    for start, end in itertools.pairwise(points):
        events += parser.feed(content[start:end])
    final_events, parsed = parser.finish()
    events += final_events
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    return text, [e for e in events if isinstance(e, MarkerFound)], parsed


ADVERSARIAL = [
    "Plain text [1, pp. 2]. With `code [1]` and array[0] then [2][1, p.3-4].\n\n```\nx[1]\n```\nEnd [1].",
    "Trailing markers at the very end [1]",
    "Partial at the end [1, pp.",
    "Spaces   \n\nnot references:\n1. [a](b)",
    "A `unclosed [1] tick and more [2].\n" + REFS,
    "No citations, bare trailer.\n\nReferences:\n",
    "Two spaces before markers  [1].\n\nReferences:\n1. [a.txt](https://x/a.txt)\n",
]


@pytest.mark.parametrize("content", [*ADVERSARIAL, "Kettles boil [1, p.1, 3][2, p.2]." + REFS])
def test_incremental_matches_batch_for_every_chunking(content: str) -> None:
    batch = parse_content(content)
    for size in (1, 2, 3, 7, len(content)):
        text, markers, parsed = _feed_in(content, list(range(0, len(content), size)))
        assert parsed == batch
        assert text == batch.text
        assert [(m.position, [n for n, _ in m.refs]) for m in markers] == [
            (c.position, [r.missing_reference or batch.files.index(r.file) + 1 for r in c.references])
            for c in batch.citations
        ]


@given(parsed_answers(), st.lists(st.integers(0, 10_000), max_size=20))
@settings(max_examples=200, deadline=None)
def test_incremental_text_and_citations_equal_default_path(parsed: ParsedContent, cuts: list[int]) -> None:
    content = render_content(parsed)
    text, markers, final = _feed_in(content, cuts)
    assert final == parse_content(content)
    assert text == final.text
    assert [m.position for m in markers] == [c.position for c in final.citations]
    lean_text, lean_markers, lean = _feed_in(content, cuts, keep_text=False)
    assert (lean_text, lean_markers) == (text, markers)
    assert lean == ParsedContent("", (), final.files)
