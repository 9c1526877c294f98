"""The emulated Pinecone Assistant: assistants, files, operations, retrieval and answers. No HTTP here."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from infra.emulator import answers, filters
from infra.emulator.context_options import (
    CHARS_PER_TOKEN,
    DEFAULT_OPTIONS,
    DEFAULT_SNIPPET_SIZE,
    DEFAULT_TOP_K,
    MAX_SNIPPET_SIZE,
    MAX_TOP_K,
    MIN_SNIPPET_SIZE,
    ContextOptions,
    integer_in,
)
from infra.emulator.exceptions import AlreadyExists, InvalidArgument, NotFound, PayloadTooLarge
from infra.emulator.extract import PAGED_KINDS, Page, extract_pages, kind_of
from infra.emulator.plan import PlanConfig, PlanMeter
from infra.emulator.retrieval import Index, pick_sentences, tokenize

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Limits of the Standard plan: 10 MB for text-like files, 100 MB for PDFs; 16 KB of metadata.
MAX_FILE_BYTES = {"pdf": 100 * 1024 * 1024}
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024
SIGNED_URL_SECONDS = 3600
MIME = {
    "pdf": "application/pdf",
    "text": "text/plain",
    "markdown": "text/markdown",
    "json": "application/json",
    "doc_x": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
# The backend takes exactly these, case-sensitively (pinecone 10.2.0 ``Message`` docstring quotes its 400s).
# How long an upload stays Processing when the emulator runs as a program (``python -m infra.emulator``, the
# local stack, the demo). The service takes seconds for a small text file and minutes for a large PDF (SDKs poll
# every 5 s); one fixed delay per file is assumed here. Embedded emulators (tests) default to 0.
REALISTIC_PROCESSING_SECONDS = 5.0
ROLES = frozenset({"user", "assistant"})


def iso(ts: float) -> str:
    """RFC 3339 with microseconds and ``Z``, as the service writes timestamps."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FileRecord:
    """An uploaded file and what was read from it."""

    id: str
    name: str
    kind: str
    size: int
    metadata: dict[str, Any] | None
    created: float
    ready_at: float
    multimodal: bool
    crc32: str
    pages: list[Page] = field(default_factory=list)
    error_message: str | None = None
    # Set by a delete that runs as an operation: the file reads Deleting until then, and is gone after.
    gone_at: float | None = None

    def status(self, now: float) -> str:
        """Processing until ``ready_at``, then Available or ProcessingFailed; Deleting once a delete started."""
        if self.gone_at is not None:
            return "Deleting"
        if now < self.ready_at:
            return "Processing"
        return "ProcessingFailed" if self.error_message else "Available"

    def wire(self, now: float, signed_url: str | None = None, *, new_api: bool = False) -> dict[str, Any]:
        """The file object; 2026-04 and later removed ``percent_done`` and ``error_message`` (OAS 2026-04)."""
        status = self.status(now)
        body = {
            "name": self.name,
            "id": self.id,
            "metadata": self.metadata,
            "created_on": iso(self.created),
            "updated_on": iso(max(self.created, min(now, self.ready_at))),
            "status": status,
            "percent_done": 1.0 if status != "Processing" else 0.5,
            "signed_url": signed_url,
            "error_message": self.error_message,
            "size": self.size,
            "multimodal": self.multimodal,
            "crc32c_hash": self.crc32,
        }
        if new_api:
            del body["percent_done"], body["error_message"]
        return body


@dataclass
class Operation:
    """A long-running file operation (2026-04+ API versions)."""

    id: str
    operation_type: str
    file_id: str
    created: float
    done_at: float
    failed: str | None = None

    def status(self, now: float) -> str:
        """Processing, then Completed or Failed."""
        if now < self.done_at:
            return "Processing"
        return "Failed" if self.failed else "Completed"

    def wire(self, now: float) -> dict[str, Any]:
        """The operation object."""
        status = self.status(now)
        done = status != "Processing"
        return {
            "id": self.id,
            "operation_type": self.operation_type,
            "file_id": self.file_id,
            "status": status,
            "created_on": iso(self.created),
            "completed_on": iso(self.done_at) if done else None,
            "percent_complete": 100 if done else 50,
            "error_message": self.failed if done else None,
            # Billing units of a finished upload are not modelled (assumed: None, as for a failed one).
            "ingestion_units": None,
        }


@dataclass
class AssistantRecord:
    """An assistant with its files and search index."""

    name: str
    uid: str
    instructions: str | None
    metadata: dict[str, Any] | None
    region: str
    created: float
    updated: float
    files: dict[str, FileRecord] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    index: Index = field(default_factory=Index)


class Backend:
    """All state of one emulator; every public method is one API operation."""

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1",
        clock: Callable[[], float] = time.time,
        processing_seconds: float = 0.0,
        wire: str = "current",
        state_dir: str | os.PathLike[str] | None = None,
        id_source: Callable[[], str] = lambda: secrets.token_hex(8),
        plan: PlanConfig | None = None,
    ) -> None:
        self.base_url = base_url
        # Data-plane URL per region (the server sets them); a region without one is served at ``base_url``.
        self.region_urls: dict[str, str] = {}
        self.clock = clock
        # Token limits and prompt-token accounting; no limit unless a plan is given (plan.py).
        self.plan = PlanMeter(plan or PlanConfig(), clock=clock)
        self.processing_seconds = processing_seconds
        if wire not in answers.WIRES:
            raise ValueError(f"unknown wire variant {wire!r}: one of {', '.join(answers.WIRES)}")
        self.wire = answers.WIRES[wire]
        self.state_dir = Path(state_dir) if state_dir else None
        self._id_source = id_source
        self._signing_key = secrets.token_bytes(32)
        self._org = str(uuid.UUID(int=zlib.crc32(b"citeq-emulator"), version=4))
        self._lock = threading.RLock()
        self._assistants: dict[str, AssistantRecord] = {}
        if self.state_dir:
            self._load_state()

    # ------------------------------------------------------------------ assistants
    def _assistant(self, name: str) -> AssistantRecord:
        record = self._assistants.get(name)
        if record is None:
            raise NotFound(f'Assistant "{name}" not found.')
        now = self.clock()
        for gone in [f for f in record.files.values() if f.gone_at is not None and f.gone_at <= now]:
            self._forget_file(record, gone.id)
        return record

    def check_region(self, name: str, region: str) -> None:
        """404 with the service's text for a data-plane call at another region's host (python-sdk issue 427)."""
        with self._lock:
            record = self._assistants.get(name)
        if record is not None and record.region != region:
            raise NotFound("Knowledge base not found")

    def assistant_wire(self, record: AssistantRecord) -> dict[str, Any]:
        """The assistant object; ``host`` is this emulator's URL for the assistant's region."""
        return {
            "name": record.name,
            "instructions": record.instructions,
            "metadata": record.metadata,
            "status": "Ready",
            "host": self.region_urls.get(record.region, self.base_url),
            "region": record.region,
            "created_at": iso(record.created),
            "updated_at": iso(record.updated),
        }

    def create_assistant(
        self,
        name: Any,
        instructions: Any = None,
        metadata: Any = None,
        region: Any = "us",
    ) -> dict[str, Any]:
        """Create an assistant; 409 if the name is taken."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidArgument(
                "Assistant name must be 1-63 characters of lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        if instructions is not None and not isinstance(instructions, str):
            raise InvalidArgument("instructions must be a string")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidArgument("metadata must be a JSON object")
        region = region or "us"
        if region not in ("us", "eu"):
            raise InvalidArgument("region must be 'us' or 'eu'")
        with self._lock:
            if name in self._assistants:
                raise AlreadyExists(f'Assistant "{name}" already exists.')
            now = self.clock()
            record = AssistantRecord(name, str(uuid.uuid4()), instructions, metadata, region, now, now)
            self._assistants[name] = record
            self._save_assistant(record)
            body = self.assistant_wire(record)
        body["status"] = "Initializing"
        return body

    def ensure_assistant(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        with self._lock:
            if name not in self._assistants:
                self.create_assistant(name)

    def describe_assistant(self, name: str) -> dict[str, Any]:
        """The assistant object."""
        with self._lock:
            return self.assistant_wire(self._assistant(name))

    def list_assistants(self) -> list[dict[str, Any]]:
        """Every assistant, by name."""
        with self._lock:
            return [self.assistant_wire(a) for _, a in sorted(self._assistants.items())]

    def update_assistant(self, name: str, instructions: Any = None, metadata: Any = None) -> dict[str, Any]:
        """Replace instructions and/or metadata; 400 when neither is given (pinecone 10.2.0 quotes the text)."""
        with self._lock:
            record = self._assistant(name)
            if instructions is None and metadata is None:
                raise InvalidArgument("No updates provided")
            if instructions is not None:
                if not isinstance(instructions, str):
                    raise InvalidArgument("instructions must be a string")
                record.instructions = instructions
            if metadata is not None:
                if not isinstance(metadata, dict):
                    raise InvalidArgument("metadata must be a JSON object")
                record.metadata = metadata
            record.updated = self.clock()
            self._save_assistant(record)
            return self.assistant_wire(record)

    def delete_assistant(self, name: str) -> None:
        """Delete an assistant and its files."""
        with self._lock:
            self._assistant(name)
            del self._assistants[name]
            if self.state_dir:
                folder = self.state_dir / name
                for path in sorted(folder.glob("*"), reverse=True):
                    path.unlink()
                if folder.exists():
                    folder.rmdir()

    # ------------------------------------------------------------------ files
    def upload_file(
        self,
        name: str,
        filename: str,
        data: bytes,
        metadata: Any = None,
        *,
        file_id: str | None = None,
        multimodal: bool = False,
    ) -> tuple[FileRecord, Operation]:
        """Accept a file, read and index it; it turns Available after the processing delay."""
        kind = kind_of(filename)
        limit = MAX_FILE_BYTES.get(kind, DEFAULT_MAX_FILE_BYTES)
        if len(data) > limit:
            raise PayloadTooLarge(
                f"File size {len(data)} bytes exceeds the {limit // (1024 * 1024)} MB limit for {kind} files"
            )
        metadata = self._check_metadata(metadata)
        if file_id is not None and not _FILE_ID.match(file_id):
            raise InvalidArgument("file_id must be 1-128 characters of letters, digits, '_' or '-'")
        error = None
        pages: list[Page] = []
        try:
            pages = extract_pages(kind, data)
        except InvalidArgument as exc:
            error = exc.message
        now = self.clock()
        with self._lock:
            record = self._assistant(name)
            fid = file_id or str(uuid.uuid4())
            if fid in record.files:
                record.index.remove_file(fid)
            crc = f"{zlib.crc32(data):08x}"
            file = FileRecord(
                fid,
                os.path.basename(filename),
                kind,
                len(data),
                metadata,
                now,
                now + self.processing_seconds,
                multimodal,
                crc,
                pages,
                error,
            )
            record.files[fid] = file
            if not error:
                record.index.add_file(fid, pages)
            kind = "upsert_file" if file_id is not None else "upload_file"
            op = Operation(str(uuid.uuid4()), kind, fid, now, file.ready_at, error)
            record.operations[op.id] = op
            self._save_file(record, file, data)
            return file, op

    @staticmethod
    def _check_metadata(metadata: Any) -> dict[str, Any] | None:
        if metadata is None:
            return None
        if isinstance(metadata, str | bytes):
            try:
                metadata = json.loads(metadata)
            except ValueError as exc:
                raise InvalidArgument(f"metadata is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise InvalidArgument("metadata must be a JSON object")
        if len(json.dumps(metadata).encode()) > MAX_METADATA_BYTES:
            raise InvalidArgument("metadata exceeds 16 KB")
        for key, value in metadata.items():
            if key.startswith("$"):
                raise InvalidArgument(f"metadata key '{key}' must not start with '$'")
            ok = isinstance(value, str | int | float | bool) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            if not ok:
                raise InvalidArgument(
                    f"metadata value for '{key}' must be a string, number, boolean or list of strings"
                )
        return metadata

    def file_wire(
        self, name: str, file: FileRecord, include_url: bool = False, *, new_api: bool = False
    ) -> dict[str, Any]:
        """A file object, with a fresh signed URL when asked."""
        now = self.clock()
        url = self.signed_url(name, file, now) if include_url else None
        return file.wire(now, url, new_api=new_api)

    def list_files(self, name: str, filter_: Any = None) -> list[FileRecord]:
        """Files of an assistant whose metadata matches ``filter_``, oldest first."""
        if filter_ is not None:
            filters.validate(filter_)
        with self._lock:
            files = list(self._assistant(name).files.values())
        return [f for f in files if filter_ is None or filters.matches(filter_, f.metadata or {})]

    def get_file(self, name: str, file_id: str) -> FileRecord:
        """One file; 404 with the service's message if it is unknown."""
        with self._lock:
            file = self._assistant(name).files.get(file_id)
        if file is None:
            raise NotFound(f"File with id {file_id}  not found in provided assistant")
        return file

    def delete_file(self, name: str, file_id: str) -> Operation | None:
        """Start deleting a file (Deleting for the processing delay, then gone); None when it went at once."""
        # A file that failed processing, or one already being deleted, goes at once: the service's 204 (the
        # 2026-07 conformance tests cite the backend's Immediate / AlreadyDeleted outcomes).
        with self._lock:
            record = self._assistant(name)
            file = self.get_file(name, file_id)
            now = self.clock()
            if file.gone_at is not None or file.status(now) == "ProcessingFailed":
                self._forget_file(record, file_id)
                return None
            file.gone_at = now + self.processing_seconds
            record.index.remove_file(file_id)  # a file being deleted is no longer searched
            op = Operation(str(uuid.uuid4()), "delete_file", file_id, now, file.gone_at)
            record.operations[op.id] = op
            if file.gone_at <= now:
                self._forget_file(record, file_id)
            return op

    def _forget_file(self, record: AssistantRecord, file_id: str) -> None:
        record.files.pop(file_id, None)
        record.index.remove_file(file_id)
        if self.state_dir:
            for path in (self.state_dir / record.name).glob(f"{file_id}.*"):
                path.unlink()

    def describe_operation(self, name: str, operation_id: str) -> dict[str, Any]:
        """An operation's state; 404 with the service's text (period included) for an unknown id."""
        with self._lock:
            op = self._assistant(name).operations.get(operation_id)
        if op is None:
            raise NotFound(f"Operation {operation_id} not found.")
        return op.wire(self.clock())

    def list_operations(
        self, name: str, operation_type: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """An assistant's operations, oldest first, optionally of one type and one status."""
        with self._lock:
            ops = list(self._assistant(name).operations.values())
        now = self.clock()
        return [
            op.wire(now)
            for op in ops
            if (operation_type is None or op.operation_type == operation_type)
            and (status is None or op.status(now) == status)
        ]

    def signed_url(self, name: str, file: FileRecord, now: float) -> str:
        """A GCS-V4-style signed URL that expires after an hour; its date and expiry are real."""
        ext = os.path.splitext(file.name)[1]
        record = self._assistants.get(name)
        path = f"{self._org}%2F{record.uid if record else name}%2F{file.id}{ext}"
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        signature = hmac.new(self._signing_key, f"{path}{stamp}".encode(), hashlib.sha256).hexdigest()
        query = "&".join(
            [
                "X-Goog-Algorithm=GOOG4-RSA-SHA256",
                "X-Goog-Credential="
                + quote(
                    f"ke-prod-1@pc-knowledge-prod.iam.gserviceaccount.com/{stamp[:8]}/auto/storage/goog4_request",
                    safe="",
                ),
                f"X-Goog-Date={stamp}",
                f"X-Goog-Expires={SIGNED_URL_SECONDS}",
                "X-Goog-SignedHeaders=host",
                "response-content-disposition=" + quote(f'inline; filename="{file.name}"', safe=""),
                "response-content-type=" + quote(MIME[file.kind], safe=""),
                f"X-Goog-Signature={signature * 8}",
            ]
        )
        return f"https://storage.googleapis.com/knowledge-prod-files/{path}?{query}"

    # ------------------------------------------------------------------ chat
    def _validate_messages(self, messages: Any) -> str:
        if not isinstance(messages, list) or not messages:
            raise InvalidArgument("Must have at least 1 message")
        query = ""
        for message in messages:
            if not isinstance(message, Mapping):
                raise InvalidArgument("Each message must be an object with role and content")
            role = message.get("role", "user")
            if role == "":
                raise InvalidArgument("Role cannot be empty")
            if role not in ROLES:
                raise InvalidArgument(f"Role '{role}' is not valid")
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                raise InvalidArgument("Message content cannot be empty")
            if role == "user":
                query = content
        if not query:
            raise InvalidArgument("Must have at least 1 user message")
        return query

    @staticmethod
    def resolve_model(model: Any) -> str:
        """The dated model the service would report; 400 for a name it does not serve."""
        if model is None:
            model = answers.DEFAULT_MODEL
        if not isinstance(model, str) or model not in answers.MODELS:
            supported = ", ".join(answers.MODELS)
            raise InvalidArgument(f"Invalid model `{model}`. Expected one of: {supported}.")
        return answers.MODELS[model]

    def _searchable(self, record: AssistantRecord, filter_: Any, now: float) -> set[str] | None:
        """The files a chat may search; None means all of them (the common case, checked per chunk for free)."""
        available = [f for f in record.files.values() if f.status(now) == "Available"]
        if not available:
            raise InvalidArgument("Assistant doesn't contain any files")
        if filter_ is not None:
            filters.validate(filter_)
        elif len(available) == len(record.files):
            return None
        return {f.id for f in available if filter_ is None or filters.matches(filter_, f.metadata or {})}

    def answer(
        self,
        name: str,
        messages: Any,
        model: Any = None,
        filter_: Any = None,
        temperature: Any = None,
        *,
        new_api: bool = False,
        context_options: ContextOptions = DEFAULT_OPTIONS,
    ) -> answers.Answer:
        """Retrieve ``context_options.top_k`` snippets, pick the most relevant sentences from them, cite each to
        its file and page; ``context_snippet_count`` is the number retrieved.

        ``snippet_size`` bounds each snippet at 4 characters a token. The emulator's chunks (about 120 words,
        ``retrieval.CHUNK_WORDS``; at most 1,195 characters in the sample documents) are normally shorter than
        the smallest size (512 tokens, 2,048 characters), so the bound caps the measured context but is not
        applied to the sentences an answer quotes. Prompt tokens: see ``_prompt_tokens``.
        """
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)):
            raise InvalidArgument("temperature must be a number")
        with self._lock:
            record = self._assistant(name)
            query = self._validate_messages(messages)
            dated = self.resolve_model(model)
            now = self.clock()
            allowed = self._searchable(record, filter_, now)
            terms = tokenize(query)
            hits = record.index.search(terms, context_options.top_k, allowed)
            picks = pick_sentences(record.index, terms, hits)
            content = ""
            citations: list[answers.Citation] = []
            signed: dict[str, dict[str, Any]] = {}

            def file_obj(file_id: str) -> dict[str, Any]:
                if file_id not in signed:
                    signed[file_id] = self.file_wire(name, record.files[file_id], include_url=True, new_api=new_api)
                return signed[file_id]

            for pick in picks:
                content += (" " if content else "") + pick.text
                position = len(content) - 1 if content[-1] in ".!?" else len(content)
                citations.append(answers.Citation(position, self._references(record, pick, hits, file_obj)))
            if not content:
                content = answers.NO_ANSWER
            snippets = " ".join(record.index.chunks[h.chunk_id].text[: context_options.snippet_chars] for h in hits)
            asked = " ".join(str(m.get("content", "")) for m in messages)
            prompt = self._prompt_tokens(record.instructions or "", asked, query, snippets, context_options)
            completion = answers.approx_tokens(content)
            self.plan.charge(name, prompt, completion)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            answer_id = "0" * 16 + self._id_source()
            return answers.Answer(answer_id, dated, content, citations, usage, "stop", len(hits))

    def _prompt_tokens(
        self, instructions: str, asked: str, query: str, snippets: str, context_options: ContextOptions
    ) -> int:
        """Prompt tokens as the service counts them: the instructions, the messages and the injected context.

        The context is the plan's: a size drawn per question for a default context (16 snippets of up to 2,048
        tokens), scaled by ``context_options.context_share`` so that fewer or shorter snippets cost
        proportionally fewer tokens; or, with ``context_tokens="measured"``, the retrieved text itself (already
        cut to ``top_k`` snippets of ``snippet_size``).
        """
        measured = answers.approx_tokens(snippets) if snippets else 0
        context = self.plan.context_tokens(query, measured)
        if self.plan.config.context_tokens is not None:  # a drawn default-context size, not the measured text
            context = round(context * context_options.context_share)
        return answers.approx_tokens(instructions + asked) + answers.PROMPT_OVERHEAD_TOKENS + context

    @staticmethod
    def _references(
        record: AssistantRecord,
        pick: Any,
        hits: list[Any],
        file_obj: Callable[[str], dict[str, Any]],
    ) -> list[answers.Reference]:
        """The pick's own page, plus up to two other top chunks holding a sentence with every query term it
        matched (when it matched at least three)."""
        chunks = record.index.chunks
        own = chunks[pick.chunk_id]
        sources = [(own.file_id, own.page, pick.text)]
        if len(pick.terms) >= 3:
            for hit in hits:
                chunk = chunks[hit.chunk_id]
                if hit.chunk_id == pick.chunk_id or (chunk.file_id, chunk.page) in {(s[0], s[1]) for s in sources}:
                    continue
                for sentence, terms in zip(chunk.sentences, chunk.sentence_terms, strict=True):
                    if pick.terms <= terms:
                        sources.append((chunk.file_id, chunk.page, sentence))
                        break
                if len(sources) == 3:
                    break
        by_file: dict[str, tuple[set[int], str]] = {}
        for file_id, page, passage in sources:
            pages, _ = by_file.setdefault(file_id, (set(), passage))
            if page is not None:
                pages.add(page)
        refs = []
        for file_id, (pages, passage) in by_file.items():
            paged = record.files[file_id].kind in PAGED_KINDS
            refs.append(answers.Reference(file_obj(file_id), sorted(pages) if paged else None, passage))
        return refs

    def context(
        self,
        name: str,
        *,
        query: Any = None,
        messages: Any = None,
        filter_: Any = None,
        top_k: Any = None,
        snippet_size: Any = None,
        new_api: bool = False,
    ) -> dict[str, Any]:
        """Retrieved snippets with scores and references; completion tokens are always 0."""
        has_query = isinstance(query, str) and query.strip() != ""
        if has_query == bool(messages):
            raise InvalidArgument("Exactly one of query or messages must be provided")
        # The same bounds as the standard chat's context_options (context_options.py).
        top_k = integer_in(DEFAULT_TOP_K if top_k is None else top_k, "top_k", 1, MAX_TOP_K)
        snippet_size = integer_in(
            DEFAULT_SNIPPET_SIZE if snippet_size is None else snippet_size,
            "snippet_size",
            MIN_SNIPPET_SIZE,
            MAX_SNIPPET_SIZE,
        )
        with self._lock:
            record = self._assistant(name)
            text = query if has_query else self._validate_messages(messages)
            allowed = self._searchable(record, filter_, self.clock())
            hits = record.index.search(tokenize(text), top_k, allowed)
            snippets = []
            for hit in hits:
                chunk = record.index.chunks[hit.chunk_id]
                file = record.files[chunk.file_id]
                reference: dict[str, Any] = {
                    "type": file.kind,
                    "file": self.file_wire(name, file, include_url=True, new_api=new_api),
                }
                if file.kind in PAGED_KINDS:
                    reference["pages"] = [chunk.page]
                snippets.append(
                    {
                        "type": "text",
                        "content": chunk.text[: snippet_size * CHARS_PER_TOKEN],
                        "score": round(hit.score / (hit.score + 5.0), 4),
                        "reference": reference,
                    }
                )
        prompt = answers.approx_tokens(text + "".join(s["content"] for s in snippets))
        return {
            "id": "0" * 16 + self._id_source(),
            "snippets": snippets,
            "usage": {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt},
        }

    # ------------------------------------------------------------------ persistence
    def _save_assistant(self, record: AssistantRecord) -> None:
        if not self.state_dir:
            return
        folder = self.state_dir / record.name
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": record.name,
            "uid": record.uid,
            "instructions": record.instructions,
            "metadata": record.metadata,
            "region": record.region,
            "created": record.created,
            "updated": record.updated,
        }
        (folder / "assistant.json").write_text(json.dumps(meta))

    def _save_file(self, record: AssistantRecord, file: FileRecord, data: bytes) -> None:
        if not self.state_dir:
            return
        folder = self.state_dir / record.name
        (folder / f"{file.id}.data").write_bytes(data)
        meta = {
            "id": file.id,
            "name": file.name,
            "metadata": file.metadata,
            "created": file.created,
            "multimodal": file.multimodal,
        }
        (folder / f"{file.id}.file.json").write_text(json.dumps(meta))

    def _load_state(self) -> None:
        assert self.state_dir is not None
        for assistant_json in sorted(self.state_dir.glob("*/assistant.json")):
            meta = json.loads(assistant_json.read_text())
            record = AssistantRecord(
                meta["name"],
                meta["uid"],
                meta["instructions"],
                meta["metadata"],
                meta["region"],
                meta["created"],
                meta["updated"],
            )
            self._assistants[record.name] = record
            for file_json in sorted(assistant_json.parent.glob("*.file.json")):
                fmeta = json.loads(file_json.read_text())
                data = (assistant_json.parent / f"{fmeta['id']}.data").read_bytes()
                kind = kind_of(fmeta["name"])
                try:
                    pages, error = extract_pages(kind, data), None
                except InvalidArgument as exc:
                    pages, error = [], exc.message
                file = FileRecord(
                    fmeta["id"],
                    fmeta["name"],
                    kind,
                    len(data),
                    fmeta["metadata"],
                    fmeta["created"],
                    fmeta["created"],
                    fmeta["multimodal"],
                    f"{zlib.crc32(data):08x}",
                    pages,
                    error,
                )
                record.files[file.id] = file
                if not error:
                    record.index.add_file(file.id, pages)

    def load_directory(self, name: str, folder: str | os.PathLike[str]) -> list[FileRecord]:
        """Create ``name`` if needed and upload every supported file under ``folder`` (skipping ones with
        the same name already there). ``x.pdf.metadata.json`` beside ``x.pdf`` supplies its metadata."""
        self.ensure_assistant(name)
        with self._lock:
            existing = {f.name for f in self._assistants[name].files.values()}
        loaded = []
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file() or path.name.endswith(".metadata.json") or path.name in existing:
                continue
            try:
                kind_of(path.name)
            except InvalidArgument:
                continue
            sidecar = path.with_name(path.name + ".metadata.json")
            metadata = json.loads(sidecar.read_text()) if sidecar.exists() else None
            file, _ = self.upload_file(name, path.name, path.read_bytes(), metadata)
            loaded.append(file)
        return loaded
