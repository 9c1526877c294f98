"""CSV export against spreadsheet formula injection (OWASP CSV Injection; issue 11)."""

from __future__ import annotations

import csv
import io

import pytest

from citeq.export import FORMULA_START, safe_cell, to_string
from citeq.models import ChatRequest, RequestRecord

HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\r=1", "=cmd|' /C calc'!A0"]


def _answer(text: str, file: str) -> dict[str, object]:
    return {
        "id": "x",
        "model": "=model",
        "message": {"role": "assistant", "content": text},
        "citations": [{"position": 3, "references": [{"file": {"name": file, "signed_url": "-u"}, "pages": [1]}]}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


@pytest.mark.parametrize("hostile", HOSTILE)
def test_no_cell_starts_a_formula_including_citeqs_own_citation_cells(hostile: str) -> None:
    items = [
        RequestRecord(
            "r1",
            ChatRequest("a", ()),
            custom_id=hostile,
            status="succeeded",
            attempts=1,
            answer=_answer(hostile, hostile),
        ),
        RequestRecord(
            "r2",
            ChatRequest("a", ()),
            custom_id="ok",
            status="failed",
            error={"type": hostile, "message": hostile, "http_status": 400},
        ),
    ]
    rows = list(csv.reader(io.StringIO(to_string(items, "csv"), newline="")))
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_START), (row, cell)
    header = rows[0]
    first = dict(zip(header, rows[1], strict=True))
    # Still readable: the text follows one quote mark, and the citation cell reads as before.
    assert first["custom_id"] == "'" + hostile and first["answer"] == "'" + hostile
    assert first["citations"] == f"pos 3: [1] {hostile} (pp. 1)"


@pytest.mark.parametrize(("value", "shown"), [("plain", "plain"), ("", ""), (7, 7), ("a=b", "a=b"), ("=1", "'=1")])
def test_safe_cell_only_touches_strings_that_would_start_a_formula(value: object, shown: object) -> None:
    assert safe_cell(value) == shown
