"""Inline citations: parse the assistant's content into text + structured citations, render the inverse,
and parse incrementally while a stream arrives. Pure: strings in, typed values out.

Accepted forms (``../shared/reference`` §3.1): `` [1, pp. 3]``, ``  [1, p.1-2, 4]``, ``[1, p.1, 3][2, p.2]``,
``[1]``, before or after punctuation, with a trailing ``References:`` list (``1. [name](signed url)``, with
or without trailing spaces) or none. Not citations, left in the text: brackets without a number (``[sic]``),
brackets glued to a word (``array[0]``), number 0, Markdown links (``[1](url)``, ``[1]: url``) and anything
inside inline code or fenced code blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from citeq.models import Citation, FileRef, ParsedContent, Reference

_PAGES = r"\d+(?:\s*[-–]\s*\d+)?(?:\s*,\s*\d+(?:\s*[-–]\s*\d+)?)*"
_BRACKET = re.compile(rf"\[(?P<n>\d+)(?:,\s*pp?\.\s*(?P<pages>{_PAGES}))?\]")
# One scan finds the next fence opener (at a line start), backtick run, or citation run.
_NEXT = re.compile(
    rf"(?m)(?P<fence>^ {{0,3}}(?P<fchars>`{{3,}}|~{{3,}}))"
    rf"|(?P<tick>`+)"
    rf"|(?P<lead>[ \t]*)(?<![\w\]])(?P<run>(?:\[\d+(?:,\s*pp?\.\s*{_PAGES})?\])+)(?![(:])"
)
# The same citation run without look-behind, so the engine can jump between '[' characters; the
# look-behind (not after a word character or ']') is checked by hand in ``_scan_plain``.
_ONE = rf"\[\d+(?:,\s*pp?\.\s*{_PAGES})?\]"
# Starting with a literal '[' lets the regex engine skip ahead between candidates (8x faster than a group).
_RUN = re.compile(rf"\[(?P<n>\d+)(?:,\s*pp?\.\s*(?P<pages>{_PAGES}))?\](?P<more>(?:{_ONE})*)(?![(:])")
# Anything in a chunk that could start or continue a marker, code, or the References header.
_SPECIAL = re.compile(r"[\[`~\n\r]")
_HEADER = re.compile(r"\n[ \t]*\n[ \t]*(?:\*\*)?References:(?:\*\*)?[ \t]*\n")
_REF_LINE = re.compile(r"^[ \t]*(?P<n>\d+)\.[ \t]+\[(?P<name>.*)\]\((?P<url>\S*)\)[ \t]*$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# What may still grow into a citation run: trailing blanks, complete brackets, a partial bracket.
_TAIL = re.compile(
    rf"[ \t]*(?:\[\d+(?:,\s*pp?\.\s*{_PAGES})?\])*(?:\[\d*(?:,\s*(?:p(?:p)?(?:\.\s*[0-9,\s\-–]*)?)?)?)?\Z"
)


def _prefixes_pattern(word: str) -> str:
    pattern = ""
    for char in reversed(word):
        pattern = f"(?:{re.escape(char)}{pattern})?"
    return pattern


# A partial References header at the end of a buffer (so a stream holds it back).
_PARTIAL_HEADER = re.compile(
    r"\n[ \t]*(?:\n[ \t]*(?:\*\*)?" + _prefixes_pattern("References:") + r"(?:\*\*)?[ \t]*)?\Z"
)
_PARTIAL_FENCE = re.compile(r"(?m)^ {0,3}(?:`{1,2}|~{1,2})?\Z")
# Page ranges wider than this are kept as their two ends rather than expanded.
MAX_RANGE = 1000


@lru_cache(maxsize=4096)
def parse_pages(text: str | None) -> tuple[int, ...]:
    """``"1-2, 4"`` -> ``(1, 2, 4)``; order kept, duplicates dropped."""
    if not text:
        return ()
    if text.isdigit():
        return (int(text),)
    if "-" not in text and "–" not in text:
        return tuple(dict.fromkeys(int(part) for part in text.split(",")))
    pages: list[int] = []
    for part in text.split(","):
        bounds = [int(b) for b in re.split(r"\s*[-–]\s*", part.strip()) if b]
        if len(bounds) == 2 and 0 <= bounds[1] - bounds[0] <= MAX_RANGE:
            pages.extend(range(bounds[0], bounds[1] + 1))
        else:
            pages.extend(bounds)
    return tuple(dict.fromkeys(pages))


def url_expiry(url: str) -> str | None:
    """When a signed URL expires (ISO 8601, UTC), from its own date and expiry parameters."""
    query = parse_qs(urlsplit(url).query)
    for date_key, ttl_key in (("X-Goog-Date", "X-Goog-Expires"), ("X-Amz-Date", "X-Amz-Expires")):
        if date_key in query and ttl_key in query:
            try:
                start = datetime.strptime(query[date_key][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                return (start + timedelta(seconds=int(query[ttl_key][0]))).strftime("%Y-%m-%dT%H:%M:%SZ")
            except ValueError:
                return None
    if "Expires" in query and query["Expires"][0].isdigit():  # V2 signed URLs: an epoch second
        return datetime.fromtimestamp(int(query["Expires"][0]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


def file_id_from_url(url: str) -> str | None:
    """The file id in a signed URL's object path (``…%2F<file uuid>.pdf``), when it carries one."""
    last = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    found = _UUID.search(last)
    return found.group(0) if found else None


def _file(name: str, url: str) -> FileRef:
    return FileRef(name=name, signed_url=url or None, id=file_id_from_url(url), url_expires_at=url_expiry(url))


def _reference_list(tail: str) -> dict[int, FileRef] | None:
    """The numbered files of a References list, or None if ``tail`` is not one.

    An empty list is one: the service has ended answers without citations in a bare ``References:``
    header (a 2024 stream capture, issue 12), and that trailer is no part of the answer's text.
    """
    files: dict[int, FileRef] = {}
    for line in tail.splitlines():
        if not line.strip():
            continue
        found = _REF_LINE.match(line)
        if not found:
            return None
        files.setdefault(int(found["n"]), _file(found["name"], found["url"]))
    return files


def split_references(content: str) -> tuple[str, dict[int, FileRef]]:
    """Split off the References list: the first header whose whole tail is a list of references wins."""
    for header in _HEADER.finditer(content):
        files = _reference_list(content[header.end() :])
        if files is not None:
            return content[: header.start()], files
    return content, {}


@dataclass
class _Scan:
    """Scanner state carried across chunks: inside a fence (its characters) or not."""

    fence: str | None = None


class Marker(NamedTuple):
    """A citation run as found in the text, before its numbers are resolved to files."""

    position: int
    refs: tuple[tuple[int, tuple[int, ...]], ...]


def _refs(run: str) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    refs = tuple((int(b["n"]), parse_pages(b["pages"])) for b in _BRACKET.finditer(run))
    return None if any(number == 0 for number, _ in refs) else refs


class _Out:
    """Clean text pieces and markers positioned in the clean text (from ``offset``)."""

    def __init__(self, offset: int) -> None:
        self.parts: list[str] = []
        self.markers: list[Marker] = []
        self.length = offset

    def text(self, piece: str) -> None:
        self.parts.append(piece)
        self.length += len(piece)

    def marker(self, refs: tuple[tuple[int, tuple[int, ...]], ...]) -> None:
        self.markers.append(Marker(self.length, refs))

    def result(self) -> tuple[str, list[Marker]]:
        return "".join(self.parts), self.markers


def _scan_plain(text: str, start: int, end: int, out: _Out) -> None:
    """``_scan`` for text with no code in it: only citation runs to find. (The hot path: kept lean.)"""
    parts, markers = out.parts, out.markers
    length = out.length
    i = start
    for found in _RUN.finditer(text, start, end):
        begin = found.start()
        before = text[begin - 1] if begin > 0 else ""
        if before in {"]", "_"} or before.isalnum():
            continue
        number, pages, more = found.group("n", "pages", "more")
        if more:
            refs = _refs(found.group(0))
        else:
            refs = ((int(number), parse_pages(pages)),) if number != "0" and number.strip("0") else None
        if refs is None:
            continue
        while begin > i and text[begin - 1] in " \t":
            begin -= 1
        parts.append(text[i:begin])
        length += begin - i
        markers.append(Marker(length, refs))
        i = found.end()
    parts.append(text[i:end])
    out.length = length + end - i


def _scan(text: str, start: int, end: int, state: _Scan, offset: int = 0) -> tuple[str, list[Marker]]:
    """Clean text of ``text[start:end]`` and its markers, positioned from ``offset``.

    ``text[:start]`` is context (for the look-behind and line starts); ``state`` carries an open code fence.
    """
    out = _Out(offset)
    if state.fence is None and text.find("`", start, end) < 0 and text.find("~~~", start, end) < 0:
        _scan_plain(text, start, end, out)
        return out.result()
    i = start
    while i < end:
        if state.fence is not None:
            fence_end = re.compile(rf"(?m)^ {{0,3}}{re.escape(state.fence[0])}{{{len(state.fence)},}}[ \t]*$")
            closed = fence_end.search(text, i, end)
            stop = closed.end() if closed else end
            out.text(text[i:stop])
            if closed:
                state.fence = None
            i = stop
            continue
        found = _NEXT.search(text, i, end)
        if found is None:
            out.text(text[i:end])
            break
        out.text(text[i : found.start()])
        if found["fence"]:
            state.fence = found["fchars"]
            out.text(found.group(0))
            i = found.end()
        elif found["tick"]:
            ticks = found["tick"]
            line_end = text.find("\n", found.end(), end)
            line_end = end if line_end < 0 else line_end
            close = re.compile(rf"(?<!`){ticks}(?!`)").search(text, found.end(), line_end)
            stop = close.end() if close else found.end()
            out.text(text[found.start() : stop])
            i = stop
        else:
            refs = _refs(found["run"])
            if refs is None:
                out.text(found.group(0))
            else:
                out.marker(refs)
            i = found.end()
    return out.result()


def _resolve(markers: list[Marker], files: dict[int, FileRef]) -> tuple[Citation, ...]:
    # References are immutable: one object per distinct (number, pages) is shared by every citation.
    made: dict[tuple[int, tuple[int, ...]], Reference] = {}
    citations = []
    for marker in markers:
        refs = []
        for key in marker.refs:
            ref = made.get(key)
            if ref is None:
                file = files.get(key[0])
                ref = made[key] = Reference(file, key[1], None if file else key[0])
            refs.append(ref)
        citations.append(Citation(marker.position, tuple(refs)))
    return tuple(citations)


def parse_content(content: str) -> ParsedContent:
    """Content as received -> text without markers, citations at their positions, the listed files."""
    body, files = split_references(content)
    text, markers = _scan(body, 0, len(body), _Scan())
    return ParsedContent(text, _resolve(markers, files), tuple(files[n] for n in sorted(files)))


def _pages_text(pages: tuple[int, ...]) -> str:
    return ", ".join(str(p) for p in pages)


def render_content(parsed: ParsedContent) -> str:
    """The inverse of ``parse_content``: markers `` [n, pp. …]`` at each position, then the References list.

    Files are numbered by their order in ``parsed.files`` (the References list), else by first citation.
    """
    numbers: dict[FileRef, int] = {file: n for n, file in enumerate(parsed.files, start=1)}
    for citation in sorted(parsed.citations, key=lambda c: c.position):
        for ref in citation.references:
            if ref.file is not None and ref.file not in numbers:
                numbers[ref.file] = len(numbers) + 1
    out: list[str] = []
    cursor = 0
    for citation in sorted(parsed.citations, key=lambda c: c.position):
        out.append(parsed.text[cursor : citation.position])
        cursor = citation.position
        brackets = []
        for ref in citation.references:
            number = numbers[ref.file] if ref.file is not None else ref.missing_reference
            pages = f", pp. {_pages_text(ref.pages)}" if ref.pages else ""
            brackets.append(f"[{number}{pages}]")
        out.append(" " + "".join(brackets))
    out.append(parsed.text[cursor:])
    if numbers:
        out.append("\n\nReferences:\n")
        for file, number in sorted(numbers.items(), key=lambda item: item[1]):
            out.append(f"{number}. [{file.name}]({file.signed_url or ''}) \n")
    return "".join(out)


@dataclass(frozen=True)
class TextDelta:
    """Clean text, safe to show: it can no longer turn into a marker."""

    text: str


@dataclass(frozen=True)
class MarkerFound:
    """A complete citation marker; its files are known once the References list has arrived."""

    position: int
    refs: tuple[tuple[int, tuple[int, ...]], ...]


Event = TextDelta | MarkerFound


@dataclass
class IncrementalParser:
    """Feed content chunks, get clean text as soon as it is safe and each marker when complete.

    Holds back only what could still become part of a marker, a code span or the References header.
    With ``keep_text=False`` nothing grows with the answer's size: the caller keeps what it needs from the
    events, and ``finish`` returns only the References list (``files``), no text and no citations.
    """

    keep_text: bool = True
    _pending: str = ""
    _context: str = ""
    _length: int = 0
    _scan_state: _Scan = field(default_factory=_Scan)
    _raw: list[str] = field(default_factory=list)
    _refs: str | None = None

    def feed(self, chunk: str) -> list[Event]:
        """Take one content chunk; return the events it makes safe."""
        if self.keep_text:
            self._raw.append(chunk)
        if self._refs is not None:
            self._refs += chunk
            return []
        fast = not self._pending and self._scan_state.fence is None and chunk and not chunk[-1].isspace()
        if fast and _SPECIAL.search(chunk) is None:  # the common case: a word that cannot start anything
            self._context = chunk[-1]
            self._length += len(chunk)
            return [TextDelta(chunk)]
        self._pending += chunk
        header = _HEADER.search(self._pending)
        if header is not None:
            events = self._commit(header.start())
            self._refs = self._pending
            self._pending = ""
            return events
        return self._commit(self._stable_end())

    def _stable_end(self) -> int:
        pending = self._pending
        line_start = pending.rfind("\n") + 1
        if self._scan_state.fence is not None:
            return line_start  # a closing fence is a whole line
        holds = [len(pending)]
        tail = _TAIL.search(pending)
        if tail:
            holds.append(tail.start())
        partial = _PARTIAL_HEADER.search(pending, max(0, len(pending) - 40))
        if partial:
            holds.append(partial.start())
        tick = pending.find("`", line_start)
        if tick >= 0:
            holds.append(tick)
        if _PARTIAL_FENCE.search(pending, line_start):
            holds.append(line_start)
        return min(holds)

    def _commit(self, upto: int) -> list[Event]:
        if upto <= 0:
            return []
        chunk = self._pending[:upto]
        self._pending = self._pending[upto:]
        text = self._context + chunk
        clean, markers = _scan(text, len(self._context), len(text), self._scan_state, self._length)
        self._context = chunk[-1:]
        events: list[Event] = []
        cursor = self._length
        for marker in markers:
            if marker.position > cursor:
                events.append(TextDelta(clean[cursor - self._length : marker.position - self._length]))
                cursor = marker.position
            events.append(MarkerFound(marker.position, marker.refs))
        if cursor < self._length + len(clean):
            events.append(TextDelta(clean[cursor - self._length :]))
        self._length += len(clean)
        return events

    def finish(self) -> tuple[list[Event], ParsedContent]:
        """End of stream: flush what was held back and resolve every citation against the References list."""
        events = self._commit(len(self._pending))
        files: dict[int, FileRef] = {}
        if self._refs is not None:
            body, files = split_references(self._refs)
            self._pending, self._refs = body, None
            events += self._commit(len(body))
        if self.keep_text:
            return events, parse_content("".join(self._raw))
        return events, ParsedContent("", (), tuple(files[n] for n in sorted(files)))
