"""Batch results in input order, as JSON Lines or CSV (citations flattened readably).

CSV is opened in spreadsheets, so no cell may start a formula (OWASP "CSV Injection": a cell beginning with
``=``, ``+``, ``-``, ``@``, tab or CR is prefixed with ``'``, which spreadsheets show as text and hide). citeq's own
citation cells read ``pos 17: [1] file.pdf (pp. 2)`` so they never need the prefix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from citeq.models import RequestRecord

CSV_COLUMNS = [
    "custom_id",
    "request_id",
    "status",
    "attempts",
    "latency_ms",
    "error_type",
    "error_message",
    "http_status",
    "answer",
    "citations",
    "references",
    "model",
    "prompt_tokens",
    "completion_tokens",
]


def jsonl_lines(items: Iterable[RequestRecord]) -> Iterator[str]:
    """One JSON object per item: custom_id, request_id, status, attempts, latency_ms, error, answer."""
    for item in items:
        yield json.dumps(item.result(), ensure_ascii=False) + "\n"


# OWASP CSV-injection rule: the characters a spreadsheet reads as the start of a formula (or a DDE payload).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A string cell that cannot start a formula (prefixed with ``'`` when it would); other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _pages(pages: list[int]) -> str:
    return f" (pp. {', '.join(map(str, pages))})" if pages else ""


def flatten(answer: dict[str, Any] | None) -> dict[str, Any]:
    """The CSV cells of an answer: text, ``pos <position>: [n] file (pp. …)`` citations, numbered references."""
    if not answer:
        return {
            "answer": "",
            "citations": "",
            "references": "",
            "model": "",
            "prompt_tokens": "",
            "completion_tokens": "",
        }
    numbers: dict[str, int] = {}
    urls: dict[str, str] = {}
    cites = []
    for citation in answer.get("citations") or []:
        parts = []
        for ref in citation["references"]:
            file = ref.get("file")
            name = file["name"] if file else f"(missing reference {ref.get('missing_reference')})"
            number = numbers.setdefault(name, len(numbers) + 1)
            if file and file.get("signed_url"):
                urls.setdefault(name, file["signed_url"])
            parts.append(f"[{number}] {name}{_pages(ref.get('pages') or [])}")
        cites.append(f"pos {citation['position']}: " + "; ".join(parts))
    usage = answer.get("usage") or {}
    return {
        "answer": answer["message"]["content"],
        "citations": " | ".join(cites),
        "references": " | ".join(f"[{n}] {name} {urls.get(name, '')}".strip() for name, n in numbers.items()),
        "model": answer.get("model", ""),
        "prompt_tokens": usage.get("prompt_tokens", ""),
        "completion_tokens": usage.get("completion_tokens", ""),
    }


def write_csv(items: Iterable[RequestRecord], out: TextIO) -> int:
    """Write the CSV with its header; returns the number of rows."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    rows = 0
    for item in items:
        error = item.error or {}
        row = {
            "custom_id": item.custom_id,
            "request_id": item.request_id,
            "status": item.status,
            "attempts": item.attempts,
            "latency_ms": item.latency_ms if item.latency_ms is not None else "",
            "error_type": error.get("type", ""),
            "error_message": error.get("message", ""),
            "http_status": error.get("http_status") or "",
                **flatten(item.answer),
        }
        writer.writerow({name: safe_cell(value) for name, value in row.items()})
        rows += 1
    return rows


def write_jsonl(items: Iterable[RequestRecord], out: TextIO) -> int:
    """Write JSON Lines; returns the number of lines."""
    rows = 0
    for line in jsonl_lines(items):
        out.write(line)
        rows += 1
    return rows


def to_string(items: Iterable[RequestRecord], fmt: str) -> str:
    """The whole export as one string (for small batches and tests)."""
    buffer = io.StringIO()
    (write_csv if fmt == "csv" else write_jsonl)(items, buffer)
    return buffer.getvalue()
