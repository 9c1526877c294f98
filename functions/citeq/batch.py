"""Batch input (JSONL or CSV), its validation line by line, and submission to the store and queue.

Each item: ``custom_id`` (required, unique in the batch), ``question`` or ``messages``, and optionally
``assistant``, ``model``, ``temperature``, ``filter``, ``metadata``, ``callback_url``. In CSV, ``messages``,
``filter`` and ``metadata`` cells hold JSON, and any other column becomes a metadata entry.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from citeq.errors import StoreError, ValidationError
from citeq.messages import check_fits
from citeq.models import OPTIONS, Request
from citeq.store import Store
from citeq.text import loads

# Deeper JSON than this in a line, a cell or a body is refused (issue 11: no RecursionError, no 500).
MAX_JSON_DEPTH = 32
# Requests stored and sent per step of a submission (a multiple of 25 and of 10: whole BatchWriteItem and
# SendMessageBatch calls).
SUBMIT_SLICE = 100
# CSV cells holding JSON: the message list, the metadata, and the options spelled as JSON.
JSON_CELLS = frozenset({"messages", "metadata", *(name for name, option in OPTIONS.items() if option.cell == "json")})
NUMBER_CELLS = frozenset(name for name, option in OPTIONS.items() if option.cell == "number")


@dataclass(frozen=True)
class LineError:
    """Why one input line was rejected."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class InvalidInput(ValidationError):
    """Some input lines are invalid; ``errors`` lists every one."""

    def __init__(self, errors: list[LineError]) -> None:
        shown = "\n".join(str(e) for e in errors[:50])
        more = f"\n... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"{len(errors)} invalid line(s); nothing was submitted:\n{shown}{more}")
        self.errors = errors


@dataclass(frozen=True)
class Line:
    """One valid input line: its number (from 1) and its request, named when its batch is bound."""

    number: int
    request: Request


@dataclass
class Parsed:
    """Valid items in input order, and the lines that were not."""

    items: list[Line] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def _records_jsonl(text: str) -> Iterator[tuple[int, Any]]:
    """``(line number, record or ValidationError)`` per non-blank line.

    Only ``\n`` ends a line (JSON Lines): ``str.splitlines`` would also split on U+2028, U+0085, form feeds and
    other characters a JSON string may hold raw, breaking one record in two and shifting every line number.
    """
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        try:
            yield number, loads(line, what="the line", max_depth=MAX_JSON_DEPTH)
        except ValidationError as exc:
            yield number, exc


def _json_cell(value: str, name: str) -> Any:
    try:
        return loads(value, what=name, max_depth=MAX_JSON_DEPTH)
    except ValidationError as exc:
        raise ValidationError(f"the {name} cell: {exc.reason}") from None


def _header(cells: list[str]) -> list[str]:
    """Column names, or ValidationError naming each empty or repeated one (never resolved silently)."""
    names = [cell.strip() for cell in cells]
    problems = [f"column {i} has no name" for i, name in enumerate(names, start=1) if not name]
    seen: dict[str, int] = {}
    for index, name in enumerate(names, start=1):
        if name and name in seen:
            problems.append(f"column {index} repeats the name {name!r} of column {seen[name]}")
        seen.setdefault(name, index)
    if "custom_id" not in seen:
        problems.append("CSV needs a header row with a custom_id column")
    if problems:
        raise ValidationError("header: " + "; ".join(problems))
    return names


def _records_csv(text: str) -> Iterator[tuple[int, Any]]:
    """``(line number, record or ValidationError)`` per data row; a row's number is the line it starts on.

    Spreadsheets write rows of empty cells (Excel's ``,,``) for blank lines: those are skipped like blank lines.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            yield 1, ValidationError("CSV needs a header row with a custom_id column")
            return
        names = _header(header)
    except (csv.Error, ValidationError) as exc:
        yield max(reader.line_num, 1), exc if isinstance(exc, ValidationError) else ValidationError(f"CSV: {exc}")
        return
    while True:
        number = reader.line_num + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            yield number, ValidationError(f"CSV: {exc}")
            return
        if cells is None:
            return
        if not any(cell.strip() for cell in cells):
            continue
        record: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        try:
            if len(cells) > len(names) and any(cell.strip() for cell in cells[len(names) :]):
                raise ValidationError("row has more cells than the header")
            for key, value in zip(names, cells, strict=False):
                if value == "":
                    continue
                if key in JSON_CELLS:
                    record[key] = _json_cell(value, key)
                elif key in NUMBER_CELLS:
                    try:
                        record[key] = float(value)
                    except ValueError:
                        raise ValidationError(f"{key} must be a number") from None
                elif key in Request.FIELDS:
                    record[key] = value
                else:
                    extra[key] = value
        except ValidationError as exc:
            yield number, exc
            continue
        # A metadata cell that is not an object is left for Request.parse to refuse with its reason (merging the
        # other columns into it raised TypeError and ended the whole parse).
        if extra and isinstance(record.get("metadata", {}), dict):
            record["metadata"] = {**extra, **record.get("metadata", {})}
        yield number, record


def parse(
    text: str, *, fmt: str, default_assistant: str | None, callback_allow_hosts: Sequence[str] = ()
) -> Parsed:
    """Validate every line (numbered from 1); duplicates of a custom_id are errors on the later lines."""
    records = _records_csv(text) if fmt == "csv" else _records_jsonl(text)
    parsed = Parsed()
    seen: dict[str, int] = {}
    for number, record in records:
        try:
            if isinstance(record, ValidationError):
                raise record
            request = Request.parse(
                record, default_assistant=default_assistant, callback_allow_hosts=callback_allow_hosts
            )
            custom_id = str(request.custom_id)
            if custom_id in seen:
                raise ValidationError(f"custom_id {custom_id!r} already used on line {seen[custom_id]}")
            seen[custom_id] = number
            parsed.items.append(Line(number, request))
        except ValidationError as exc:
            parsed.errors.append(LineError(number, exc.reason))
    if not parsed.items and not parsed.errors:
        parsed.errors.append(LineError(1, "the input has no items"))
    return parsed


def read(
    path: str | Path,
    *,
    fmt: str | None = None,
    default_assistant: str | None = None,
    callback_allow_hosts: Sequence[str] = (),
) -> Parsed:
    """Read and validate a JSONL or CSV file (format from ``fmt`` or the extension)."""
    path = Path(path)
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        # Bytes, not read_text: universal newlines would turn a lone CR (JSON whitespace) into a line end.
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start]
        raise ValidationError(f"line {line}: not UTF-8 (byte 0x{bad:02x}); save the file as UTF-8") from None
    return parse(text, fmt=fmt, default_assistant=default_assistant, callback_allow_hosts=callback_allow_hosts)


@dataclass(frozen=True)
class Submitted:
    """What a submission did."""

    batch_id: str
    total: int
    enqueued: int
    skipped: list[LineError]
    reused: bool = False


def new_batch_id(clock: Callable[[], float] = time.time) -> str:
    """Time-ordered, unique: ``b_<ms since epoch, hex>_<random>``."""
    return f"b_{int(clock() * 1000):011x}{secrets.token_hex(4)}"


def request_id(batch_id: str, seq: int) -> str:
    """A batch item's request id, derived so a resumed submission names the same requests."""
    return f"{batch_id}-{seq:06d}"


def _fingerprint(lines: Iterable[Line]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(json.dumps(line.request.input_json(), sort_keys=True).encode())
    return digest.hexdigest()


def _requests(batch_id: str, lines: list[Line]) -> list[Request]:
    """The batch's requests, named, each checked to fit one SQS message before anything is written."""
    requests = []
    for seq, line in enumerate(lines, start=1):
        request = replace(line.request, request_id=request_id(batch_id, seq), batch_id=batch_id, seq=seq)
        check_fits(request, f"line {line.number}: the request")
        requests.append(request)
    return requests


def _bind(store: Store, key: str, batch_id: str, *, automatic: bool, stored_key: str | None) -> tuple[str, bool]:
    """The batch a submission writes to, and whether that batch was submitted in full already.

    With the caller's idempotency key, the batch bound to it (same input required). Without one, the input's
    fingerprint is bound while it is being submitted, so re-running an interrupted submit finishes that batch;
    once a batch is submitted its automatic key is released and the same input makes a new batch."""
    for _ in range(3):
        claimed = store.claim_idempotency_key(key, batch_id)
        if claimed == batch_id:
            return batch_id, False
        existing = store.get_batch(claimed)
        if not automatic:
            if existing is not None and existing.idempotency_key != stored_key:
                raise ValidationError(f"idempotency key {key!r} was used for a different input")
            return claimed, existing is not None and existing.state == "submitted"
        if existing is not None and existing.state != "submitted":
            return claimed, False
        store.release_idempotency_key(key, claimed)  # a finished batch whose key was left bound: free it
    raise StoreError("could not bind the submission to a batch (the input is being submitted concurrently)")


def submit(
    parsed: Parsed,
    *,
    store: Store,
    idempotency_key: str | None = None,
    skip_invalid: bool = False,
    source: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Submitted:
    """Create the batch and store its items as queued, in slices; storing a request enqueues it (the table's
    stream drives the dispatcher). Everything is validated before the first write.

    The same input submitted again while its batch is incomplete (interrupted, or a write failed) finishes
    that batch, with or without an ``idempotency_key``; with a key already used for a submitted batch of the
    same input, returns that batch and writes nothing.
    """
    if parsed.errors and not skip_invalid:
        raise InvalidInput(parsed.errors)
    if not parsed.items:
        raise InvalidInput(parsed.errors or [LineError(1, "the input has no items")])
    items = parsed.items
    batch_id = new_batch_id(clock)
    _requests(batch_id, items)  # sizes checked before anything is written
    fingerprint = _fingerprint(items)
    stored_key = f"{idempotency_key}:{fingerprint}" if idempotency_key else None
    key = idempotency_key or f"auto:{fingerprint}"
    batch_id, complete = _bind(store, key, batch_id, automatic=idempotency_key is None, stored_key=stored_key)
    existing = store.get_batch(batch_id)
    if complete and existing is not None:
        return Submitted(batch_id, existing.total, 0, parsed.errors, reused=True)
    requests = _requests(batch_id, items)
    if existing is None:
        store.create_batch(batch_id, len(items), source=source, idempotency_key=stored_key)
    written = 0
    # Store in slices, so the first answers are being worked on while the rest is still submitted.
    for start in range(0, len(requests), SUBMIT_SLICE):
        written += store.put_requests(requests[start : start + SUBMIT_SLICE])
    store.mark_batch_submitted(batch_id)
    if idempotency_key is None:
        store.release_idempotency_key(key, batch_id)
    return Submitted(batch_id, len(items), written, parsed.errors, reused=existing is not None)


def retry_failed(batch_id: str, *, store: Store) -> int:
    """Put every failed request of a batch back to queued (a new retry generation; the reset enqueues it);
    returns how many. An interrupted retry is finished by running it again: what it reset is queued already."""
    return sum(1 for item in store.iter_batch(batch_id) if item.status == "failed" and store.reset(item) is not None)


def cancel(batch_id: str, *, store: Store) -> int:
    """Cancel every request of a batch still queued (the worker skips them); returns how many."""
    return sum(1 for item in store.iter_batch(batch_id) if item.status == "queued" and store.cancel(item))
