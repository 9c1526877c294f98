"""Server-sent events decoded by the WHATWG rules, in layers: bytes -> lines -> events. Pure.

Handles ``data:`` with or without a space, comment lines, CRLF / CR / LF line ends (also split across
chunks), UTF-8 split across network chunks, a leading BOM, and ``id``/``event``/``retry`` fields.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class LineDecoder:
    """Bytes in, complete lines out; a CR at the end of one chunk and LF at the start of the next is one end."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by ``data``."""
        text = self._utf8.decode(data)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        return self._split(final=False)

    def close(self) -> tuple[list[str], str]:
        """Lines completed at end of stream (a trailing CR ends one), and any unterminated fragment."""
        self._buffer += self._utf8.decode(b"", final=True)
        lines = self._split(final=True)
        fragment, self._buffer = self._buffer, ""
        return lines, fragment

    def _split(self, final: bool) -> list[str]:
        buffer = self._buffer
        if "\r" not in buffer:  # the common case, without a regex
            *lines, self._buffer = buffer.split("\n")
            return lines
        lines = []
        start = 0
        for found in _LINE_END.finditer(buffer):
            # A lone CR at the very end may be the first half of CRLF: wait for the next chunk.
            if found.group(0) == "\r" and found.end() == len(buffer) and not final:
                break
            lines.append(buffer[start : found.start()])
            start = found.end()
        self._buffer = buffer[start:]
        return lines


class EventDecoder:
    """Lines in, events out, per the WHATWG event-stream interpretation."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self._retry: int | None = None

    def line(self, line: str) -> ServerSentEvent | None:
        """Process one line; returns an event when a blank line dispatches one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    @property
    def pending(self) -> bool:
        """Whether data lines are waiting for their blank line."""
        return bool(self._data)

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent("\n".join(self._data), self._event or "message", self.last_event_id, self._retry)
        self._data, self._event, self._retry = [], "", None
        return event


class SSEDecoder:
    """Bytes in, events out. As the WHATWG rules say, an event whose blank line never came is discarded at
    the end of the stream; ``close`` tells whether that happened."""

    def __init__(self) -> None:
        self._lines = LineDecoder()
        self._events = EventDecoder()
        self._fragment = ""

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Events completed by ``data``."""
        return [e for line in self._lines.feed(data) if (e := self._events.line(line)) is not None]

    def close_events(self) -> list[ServerSentEvent]:
        """End of stream: events completed by a final line end that was held back (a lone CR)."""
        lines, self._fragment = self._lines.close()
        return [e for line in lines if (e := self._events.line(line)) is not None]

    def close(self) -> bool:
        """End of stream; returns True when a partial event (or line) had to be discarded."""
        self.close_events()
        return bool(self._fragment) or self._events.pending


def encode(data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> bytes:
    """One event in wire form (multi-line data becomes several ``data:`` lines)."""
    out = []
    if id is not None:
        out.append(f"id: {id}")
    if event is not None:
        out.append(f"event: {event}")
    if retry is not None:
        out.append(f"retry: {retry}")
    out.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(out) + "\n\n").encode()


def comment(text: str = "") -> bytes:
    """A comment line (heartbeat)."""
    return f": {text}\n\n".encode()
