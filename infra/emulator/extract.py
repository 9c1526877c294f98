"""Turn uploaded bytes into pages of text, the way the service types files: by extension only."""

from __future__ import annotations

import io
import json
import os

from infra.emulator.exceptions import InvalidArgument

# Reference type of each extension, as the service names it in context snippets.
KIND_BY_EXTENSION = {
    ".pdf": "pdf",
    ".txt": "text",
    ".md": "markdown",
    ".json": "json",
    ".docx": "doc_x",
}
PAGED_KINDS = frozenset({"pdf", "doc_x"})
# Lines of a .docx are grouped into pages of this many paragraphs: a .docx has no fixed pages
# until it is laid out, so the emulator numbers stable "pages" of its own.
DOCX_PARAGRAPHS_PER_PAGE = 40

Page = tuple[int | None, str]


def kind_of(filename: str) -> str:
    """Return the reference type for ``filename`` or raise the service's 400 for an unsupported one."""
    ext = os.path.splitext(filename)[1].lower()
    if not ext:
        raise InvalidArgument(f"File '{filename}' has no extension; supported types are .pdf, .txt, .md, .json, .docx")
    kind = KIND_BY_EXTENSION.get(ext)
    if kind is None:
        raise InvalidArgument(
            f"Unsupported file type '{ext}'. Uploaded file can only be a pdf, txt, md, json or docx file"
        )
    return kind


def extract_pages(kind: str, data: bytes) -> list[Page]:
    """Return ``[(page_number or None, text)]``; page numbers are 1-based and only set for paged kinds."""
    if kind == "pdf":
        return _pdf_pages(data)
    if kind == "doc_x":
        return _docx_pages(data)
    text = _decode(data)
    if kind == "json":
        try:
            text = _json_text(json.loads(text))
        except ValueError as exc:
            raise InvalidArgument(f"File is not valid JSON: {exc}") from exc
    return [(None, text)]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _json_text(value: object, prefix: str = "") -> str:
    """Flatten JSON into ``key: value.`` sentences so retrieval sees words, not braces."""
    lines: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            label = f"{prefix} {key}".strip()
            lines.append(_json_text(inner, label))
    elif isinstance(value, list):
        for item in value:
            # A list of records reads better labelled by each record's own name than by the list's key.
            label = item.get("name") or item.get("title") if isinstance(item, dict) else None
            if isinstance(label, str):
                record = {k: v for k, v in item.items() if k not in ("name", "title")}
                lines.append(_json_text(record, label))
            else:
                lines.append(_json_text(item, prefix))
    else:
        sentence = f"{prefix}: {value}" if prefix else str(value)
        lines.append(sentence if sentence.endswith((".", "!", "?")) else sentence + ".")
    return "\n".join(line for line in lines if line)


def _pdf_pages(data: bytes) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        return [(number, page.extract_text() or "") for number, page in enumerate(reader.pages, start=1)]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise InvalidArgument(f"File could not be read as a PDF: {exc}") from exc


def _docx_pages(data: bytes) -> list[Page]:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidArgument(f"File could not be read as a .docx: {exc}") from exc
    paragraphs = [p.text for p in document.paragraphs if p.text.strip()]
    pages: list[Page] = []
    for start in range(0, max(len(paragraphs), 1), DOCX_PARAGRAPHS_PER_PAGE):
        chunk = paragraphs[start : start + DOCX_PARAGRAPHS_PER_PAGE]
        pages.append((len(pages) + 1, "\n".join(chunk)))
    return pages
