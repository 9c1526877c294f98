from __future__ import annotations

import io
import json

import pytest

from infra.emulator.exceptions import InvalidArgument
from infra.emulator.extract import extract_pages, kind_of
from infra.emulator.models import Backend


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.PDF", "pdf"), ("b.txt", "text"), ("c.md", "markdown"), ("d.json", "json"), ("e.docx", "doc_x")],
)
def test_files_are_typed_by_extension(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_docx_paragraphs_are_read_into_numbered_pages() -> None:
    import docx

    document = docx.Document()
    for n in range(45):
        document.add_paragraph(f"Paragraph {n} explains how the espresso machine heats water to ninety degrees.")
    buffer = io.BytesIO()
    document.save(buffer)
    pages = extract_pages("doc_x", buffer.getvalue())
    assert [number for number, _ in pages] == [1, 2]
    assert "Paragraph 44" in pages[1][1]


def test_docx_answer_cites_its_page() -> None:
    import docx

    document = docx.Document()
    for n in range(41):
        text = (
            "The warranty of the espresso machine lasts five years and covers the pump."
            if n == 40
            else (f"Note {n} about cleaning the milk frother after every single use.")
        )
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    backend = Backend()
    backend.create_assistant("docs")
    backend.upload_file("docs", "manual.docx", buffer.getvalue())
    answer = backend.answer("docs", [{"content": "How long is the espresso machine warranty?"}])
    assert answer.content.startswith("The warranty of the espresso machine lasts five years")
    assert answer.citations[0].references[0].pages == [2]


def test_json_is_flattened_into_sentences_and_bad_json_fails_processing() -> None:
    pages = extract_pages("json", json.dumps({"plans": [{"name": "Pro", "price": 10}]}).encode())
    assert pages == [(None, "Pro price: 10.")]
    backend = Backend()
    backend.create_assistant("j")
    file, _ = backend.upload_file("j", "broken.json", b"{nope")
    assert file.status(backend.clock()) == "ProcessingFailed" and "not valid JSON" in (file.error_message or "")
    with pytest.raises(InvalidArgument, match="doesn't contain any files"):
        backend.answer("j", [{"content": "anything?"}])
