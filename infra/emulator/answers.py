"""One internal answer, rendered in every shape the service sends.

The standard chat shape is the source: plain text plus ``citations[].position``. The OpenAI-compatible
content is derived from it the way the service does it: number each cited file by order of first citation,
insert `` [n, pp. 3]`` (or `` [n]`` for files without pages, adjacent brackets for several files) at each
position, then append a ``References:`` list of signed URLs.

How those pieces look on the wire has changed over time; ``WIRES`` holds each variant the service is known to
have sent (``--wire``, issue 12; sources in ``../shared/reference/service-fidelity.md``):

- ``2024`` (June/July 2024 outputs and a raw 2024 stream capture): ``  [1, p.1-2, 4]`` with two spaces,
  References lines without a trailing space, an answer with no citations still ending in an empty
  ``\n\nReferences:\n``; streams framed ``data:{...}`` with no space, content chunks carrying
  ``"role": null`` and ``"usage": null``, and a finish chunk whose ``delta`` is ``null``.
- ``2025`` (Jan/Feb 2025 outputs): `` [1, pp. 1]``, but two spaces before a marker without pages
  (``"..."  [1].``).
- ``current`` (the docs and the 2026 SDK fixtures): one space everywhere, ``data: {...}``, a finish chunk with
  ``{"role": null, "content": null}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Requested model -> the dated model the service reports, for every name some API version lists (which
# version takes which name is ``versions.models``). Claude 3.x names are routed to their successor (docs).
MODELS = {
    "gpt-4o": "gpt-4o-2024-11-20",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-3-5-sonnet": "claude-sonnet-4-5-20250929",
    "claude-3-7-sonnet": "claude-sonnet-4-5-20250929",
    "gemini-2.5-pro": "gemini-2.5-pro",
}
DEFAULT_MODEL = "gpt-4o"
NO_ANSWER = "I could not find information about that in the files available to this assistant."
# Fixed prompt overhead (instructions wrapper, citation rules) added to the approximate prompt size.
PROMPT_OVERHEAD_TOKENS = 250


def approx_tokens(text: str) -> int:
    """Token count approximated as one token per four characters (OpenAI's rule of thumb), at least 1."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class Reference:
    """One file cited by a citation, with the pages used and the passage (for highlights)."""

    file: dict[str, Any]
    pages: list[int] | None
    highlight: str | None = None


@dataclass(frozen=True)
class Citation:
    """A position in the answer text and the references that support the text before it."""

    position: int
    references: list[Reference]


@dataclass
class Answer:
    """An answer in the standard chat's terms."""

    id: str
    model: str
    content: str
    citations: list[Citation] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str = "stop"
    context_snippet_count: int = 0


def _ranges(pages: list[int]) -> str:
    parts: list[str] = []
    start = prev = pages[0]
    for page in [*pages[1:], None]:
        if page is not None and page == prev + 1:
            prev = page
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if page is not None:
            start = prev = page
    return ", ".join(parts)


@dataclass(frozen=True)
class Wire:
    """One variant of the OpenAI-compatible wire format (see the module docstring)."""

    name: str
    style: str = "pp"
    lead_paged: str = " "
    lead_unpaged: str = " "
    reference_end: str = " \n"
    empty_references: bool = False
    sse_prefix: bytes = b"data: "
    # The finish chunk's delta; None is sent as JSON null.
    finish_delta: dict[str, Any] | None = field(default_factory=lambda: {"role": None, "content": None})
    null_fields: bool = False  # content chunks carry "role": null and "usage": null


WIRES = {
    "2024": Wire(
        "2024",
        style="p",
        lead_paged="  ",
        lead_unpaged="  ",
        reference_end="\n",
        empty_references=True,
        sse_prefix=b"data:",
        finish_delta=None,
        null_fields=True,
    ),
    "2025": Wire("2025", lead_unpaged="  "),
    "current": Wire("current"),
}
CURRENT = WIRES["current"]


def marker(number: int, pages: list[int] | None, style: str) -> str:
    """One bracket: ``[1, pp. 3, 4]`` (style ``pp``), ``[1, p.3-4]`` (style ``p``) or ``[1]``."""
    if not pages:
        return f"[{number}]"
    if style == "p":
        return f"[{number}, p.{_ranges(pages)}]"
    return f"[{number}, pp. {', '.join(map(str, pages))}]"


def _numbering(answer: Answer) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for citation in sorted(answer.citations, key=lambda c: c.position):
        for ref in citation.references:
            numbers.setdefault(ref.file["id"], len(numbers) + 1)
    return numbers


def _files(answer: Answer) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for citation in answer.citations:
        for ref in citation.references:
            files.setdefault(ref.file["id"], ref.file)
    return files


def marked_segments(answer: Answer, wire: Wire = CURRENT) -> list[tuple[str, str]]:
    """The OpenAI-compatible content as ``("text"|"marker"|"references", piece)`` segments, in order."""
    numbers = _numbering(answer)
    segments: list[tuple[str, str]] = []
    cursor = 0
    for citation in sorted(answer.citations, key=lambda c: c.position):
        if citation.position > cursor:
            segments.append(("text", answer.content[cursor : citation.position]))
        cursor = max(cursor, citation.position)
        brackets = "".join(marker(numbers[r.file["id"]], r.pages, wire.style) for r in citation.references)
        lead = wire.lead_paged if citation.references[0].pages else wire.lead_unpaged
        segments.append(("marker", lead + brackets))
    if cursor < len(answer.content):
        segments.append(("text", answer.content[cursor:]))
    if numbers:
        files = _files(answer)
        end = wire.reference_end
        lines = [f"{numbers[fid]}. [{files[fid]['name']}]({files[fid]['signed_url']}){end}" for fid in numbers]
        segments.append(("references", "\n\nReferences:\n" + "".join(lines)))
    elif wire.empty_references:
        segments.append(("references", "\n\nReferences:\n"))
    return segments


def marked_content(answer: Answer, wire: Wire = CURRENT) -> str:
    """The content string of the OpenAI-compatible response."""
    return "".join(piece for _, piece in marked_segments(answer, wire))


_WORD = re.compile(r"\s*\S+|\s+")


def content_tokens(answer: Answer, wire: Wire = CURRENT) -> Iterator[str]:
    """Content chunks as the service streams them: words, each marker as its own chunk, then references."""
    for kind, piece in marked_segments(answer, wire):
        if kind == "marker":
            yield piece
        elif kind == "references":
            yield "\n\nReferences:\n"
            yield from piece[len("\n\nReferences:\n") :].splitlines(keepends=True)
        else:
            yield from _WORD.findall(piece)


def completion_body(answer: Answer, wire: Wire = CURRENT) -> dict[str, Any]:
    """The non-streaming OpenAI-compatible response."""
    return {
        "id": answer.id,
        "choices": [
            {
                "index": 0,
                "finish_reason": answer.finish_reason,
                "message": {"role": "assistant", "content": marked_content(answer, wire)},
            }
        ],
        "model": answer.model,
        "usage": answer.usage,
    }


def repeated(answer: Answer, times: int) -> Answer:
    """The answer's text and citations ``times`` over (for large-answer benchmarks)."""
    if times <= 1:
        return answer
    step = len(answer.content) + 1
    content = " ".join([answer.content] * times)
    citations = [Citation(c.position + i * step, c.references) for i in range(times) for c in answer.citations]
    return Answer(
        answer.id, answer.model, content, citations, answer.usage, answer.finish_reason, answer.context_snippet_count
    )


def _coalesced(tokens: Iterator[str], min_chars: int) -> Iterator[str]:
    buffer = ""
    for token in tokens:
        buffer += token
        if len(buffer) >= min_chars:
            yield buffer
            buffer = ""
    if buffer:
        yield buffer


def completion_chunks(answer: Answer, wire: Wire = CURRENT, min_chars: int = 0) -> Iterator[dict[str, Any]]:
    """The streamed OpenAI-compatible chunks: role, content..., finish, usage (``choices: []``).

    ``min_chars`` > 0 merges content tokens into chunks of at least that many characters.
    """

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        body = {
            "id": answer.id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "model": answer.model,
        }
        if wire.null_fields:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": ""})
    tokens = content_tokens(answer, wire)
    for token in _coalesced(tokens, min_chars) if min_chars > 0 else tokens:
        yield chunk({"role": None, "content": token} if wire.null_fields else {"content": token})
    yield chunk(wire.finish_delta, answer.finish_reason)
    yield {"id": answer.id, "choices": [], "model": answer.model, "usage": answer.usage}


def _reference_body(ref: Reference, include_highlights: bool) -> dict[str, Any]:
    highlight = {"type": "text", "content": ref.highlight} if include_highlights and ref.highlight else None
    return {"file": ref.file, "pages": ref.pages or [], "highlight": highlight}


def citation_body(citation: Citation, include_highlights: bool) -> dict[str, Any]:
    """A citation in the standard chat shape."""
    return {
        "position": citation.position,
        "references": [_reference_body(r, include_highlights) for r in citation.references],
    }


def chat_body(answer: Answer, include_highlights: bool = False) -> dict[str, Any]:
    """The standard chat response."""
    return {
        "id": answer.id,
        "model": answer.model,
        "finish_reason": answer.finish_reason,
        "message": {"role": "assistant", "content": answer.content},
        "usage": answer.usage,
        "citations": [citation_body(c, include_highlights) for c in answer.citations],
        "context_snippet_count": answer.context_snippet_count,
    }


def chat_events(answer: Answer, include_highlights: bool = False) -> Iterator[dict[str, Any]]:
    """The standard chat stream: message_start, content_chunk..., citation..., message_end."""
    base = {"id": answer.id, "model": answer.model}
    yield {
        "type": "message_start",
        **base,
        "role": "assistant",
        "context_snippet_count": answer.context_snippet_count,
    }
    for token in _WORD.findall(answer.content):
        yield {"type": "content_chunk", **base, "delta": {"content": token}}
    for citation in answer.citations:
        yield {"type": "citation", **base, "citation": citation_body(citation, include_highlights)}
    yield {"type": "message_end", **base, "finish_reason": answer.finish_reason, "usage": answer.usage}
