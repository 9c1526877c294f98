"""Parse -> call the backend -> serialize, one function per API operation, and the route table."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote

from infra.emulator import answers, versions
from infra.emulator.context_options import DEFAULT_OPTIONS, ContextOptions
from infra.emulator.exceptions import InvalidArgument, NotFound
from infra.emulator.models import Backend


@dataclass
class Request:
    """What a handler needs of an HTTP request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    # Answer shape settings of the run (FaultConfig.answer_repeat, FaultConfig.stream_chunk_chars).
    answer_repeat: int = 1
    stream_chunk_chars: int = 0
    # The region whose data-plane host received the request (the emulator serves one host per region).
    region: str = "us"

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or the service's 400."""
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise InvalidArgument(f"Request body is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InvalidArgument("Request body must be a JSON object")
        return value

    @property
    def api_version(self) -> str:
        """The requested API version (absent: the oldest supported one); 400 for an unknown one."""
        return versions.resolve(self.headers.get("x-pinecone-api-version"))


@dataclass
class Response:
    """A JSON body, or a stream of SSE payloads (dicts, or raw strings such as ``[DONE]``)."""

    status: int = 200
    body: Any = None
    events: Iterator[dict[str, Any] | str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # How each SSE payload is introduced (``data:`` with or without a space; the server's default if None).
    sse_prefix: bytes | None = None


Handler = Callable[[Backend, Request], Response]


_DATA_PLANE = ("/assistant/files/", "/assistant/operations/", "/assistant/chat/")
# 2026-04+ listings: the service's default and largest page sizes (OAS 2026-04; the backend rejects > 100).
DEFAULT_PAGE = 50
MAX_PAGE = 100
METADATA_QUERY_ERROR = (
    "metadata query parameter is not supported in this API version; include metadata as a multipart form field instead"
)
OPERATION_TYPES = ("upload_file", "upsert_file", "update_file_metadata", "delete_file")
OPERATION_STATUSES = ("Processing", "Completed", "Failed")


def call(handler: Handler, backend: Backend, request: Request) -> Response:
    """Run one operation, after the checks the service's routers make first: API version, then region host."""
    _ = request.api_version
    name = request.params.get("name")
    if name is not None and request.path.startswith(_DATA_PLANE):
        backend.check_region(name, request.region)
    return handler(backend, request)


def _page(items: list[Any], request: Request, default: int) -> tuple[list[Any], str | None]:
    """One page of a 2026-04+ listing and the opaque token of the next (None when exhausted)."""
    raw_limit = request.query.get("limit")
    try:
        limit = default if raw_limit is None else int(raw_limit)
    except ValueError as exc:
        raise InvalidArgument("limit must be an integer") from exc
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}")
    start = 0
    token = request.query.get("pagination_token")
    if token:
        try:
            start = int(json.loads(base64.urlsafe_b64decode(token.encode()))["skip"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidArgument("Invalid pagination token") from exc
    end = start + limit
    following = base64.urlsafe_b64encode(json.dumps({"skip": end}).encode()).decode() if end < len(items) else None
    return items[start:end], following


def _paged(key: str, items: list[Any], request: Request, default: int) -> dict[str, Any]:
    page, following = _page(items, request, default)
    body: dict[str, Any] = {key: page}
    if following is not None:  # omitted, not null, when exhausted (the backend's skip_serializing_if)
        body["pagination"] = {"next": following}
    return body


def _new_api(request: Request) -> bool:
    return versions.has_operations(request.api_version)


# --------------------------------------------------------------------------- control plane
def create_assistant(backend: Backend, request: Request) -> Response:
    body = request.json()
    return Response(
        200,
        backend.create_assistant(body.get("name"), body.get("instructions"), body.get("metadata"), body.get("region")),
    )


def list_assistants(backend: Backend, request: Request) -> Response:
    assistants = backend.list_assistants()
    if not _new_api(request):
        return Response(200, {"assistants": assistants})
    return Response(200, _paged("assistants", assistants, request, DEFAULT_PAGE))


def describe_assistant(backend: Backend, request: Request) -> Response:
    return Response(200, backend.describe_assistant(request.params["name"]))


def update_assistant(backend: Backend, request: Request) -> Response:
    body = request.json()
    return Response(
        200, backend.update_assistant(request.params["name"], body.get("instructions"), body.get("metadata"))
    )


def delete_assistant(backend: Backend, request: Request) -> Response:
    backend.delete_assistant(request.params["name"])
    return Response(200, {})


# --------------------------------------------------------------------------- files
def _multipart(request: Request) -> dict[str, tuple[str | None, bytes]]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidArgument("File upload must be multipart/form-data with a 'file' part")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + request.body
    )
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            parts[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


def upload_file(backend: Backend, request: Request) -> Response:
    new_api = _new_api(request)
    # 2026-04+: metadata only as a multipart field, and only the file and metadata parts (the 2026-07 conformance
    # tests, citing the backend's upload parameter parsing; the text for an extra part is assumed).
    if new_api and "metadata" in request.query:
        raise InvalidArgument(METADATA_QUERY_ERROR)
    parts = _multipart(request)
    extra = sorted(set(parts) - {"file", "metadata"})
    if new_api and extra:
        raise InvalidArgument(f"Unexpected multipart field '{extra[0]}': only 'file' and 'metadata' are accepted")
    if "file" not in parts or not parts["file"][0]:
        raise InvalidArgument("Missing 'file' part with a filename")
    filename, data = parts["file"]
    metadata: Any = None if new_api else request.query.get("metadata")
    if "metadata" in parts:
        metadata = parts["metadata"][1].decode()
    multimodal = request.query.get("multimodal", "false").lower() == "true"
    file, op = backend.upload_file(
        request.params["name"],
        filename or "",
        data,
        metadata,
        file_id=request.params.get("file_id"),
        multimodal=multimodal,
    )
    if new_api:
        return Response(202, op.wire(backend.clock()), headers=_location(request, op.id))
    return Response(200, file.wire(backend.clock()))


def _location(request: Request, operation_id: str) -> dict[str, str]:
    """Where to follow an operation, with the ``/assistant`` prefix the backend writes."""
    return {"Location": f"/assistant/operations/{request.params['name']}/{operation_id}"}


def list_files(backend: Backend, request: Request) -> Response:
    filter_ = None
    if "filter" in request.query:
        try:
            filter_ = json.loads(request.query["filter"])
        except ValueError as exc:
            raise InvalidArgument(f"filter is not valid JSON: {exc}") from exc
    name = request.params["name"]
    new_api = _new_api(request)
    files = [backend.file_wire(name, f, new_api=new_api) for f in backend.list_files(name, filter_)]
    if not new_api:
        return Response(200, {"files": files})
    return Response(200, _paged("files", files, request, MAX_PAGE))


def describe_file(backend: Backend, request: Request) -> Response:
    name = request.params["name"]
    file = backend.get_file(name, request.params["file_id"])
    include_url = request.query.get("include_url", "false").lower() == "true"
    return Response(200, backend.file_wire(name, file, include_url, new_api=_new_api(request)))


def delete_file(backend: Backend, request: Request) -> Response:
    op = backend.delete_file(request.params["name"], request.params["file_id"])
    if not _new_api(request):
        return Response(200, {})
    if op is None:
        return Response(204)
    return Response(202, op.wire(backend.clock()), headers=_location(request, op.id))


def _operations_route(request: Request) -> None:
    # Versions before 2026-04 route operations to the backend's not-found router (2026-07 conformance tests).
    if not _new_api(request):
        raise NotFound(f"No route for {request.method} {request.path}")


def describe_operation(backend: Backend, request: Request) -> Response:
    _operations_route(request)
    return Response(200, backend.describe_operation(request.params["name"], request.params["operation_id"]))


def list_operations(backend: Backend, request: Request) -> Response:
    _operations_route(request)
    operation_type = request.query.get("operation_type")
    status = request.query.get("status")
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        raise InvalidArgument(f"operation_type must be one of {', '.join(OPERATION_TYPES)}")
    if status is not None and status not in OPERATION_STATUSES:
        raise InvalidArgument(f"status must be one of {', '.join(OPERATION_STATUSES)}")
    operations = backend.list_operations(request.params["name"], operation_type, status)
    return Response(200, _paged("operations", operations, request, DEFAULT_PAGE))


# --------------------------------------------------------------------------- chat
# The shared reference (pinecone-assistant-api.md §2) lists context_options as NOT part of /chat/completions
# (spec; SDK docstrings) and marks the service's answer when it is sent anyway as unknown [?]. Refusing it is
# stricter than either possibility, so a client that relies on it fails here first.
COMPLETIONS_CONTEXT_OPTIONS = (
    "context_options is not supported on /chat/completions; use the standard chat (/assistant/chat/{name})"
)


def _answer(backend: Backend, request: Request, route: str) -> tuple[answers.Answer, dict[str, Any]]:
    body = request.json()
    stream = body.get("stream", False)
    if stream not in (True, False, "true", "false"):
        raise InvalidArgument("stream must be a boolean")
    model = body.get("model")
    if model is not None:
        versions.check_model(str(model), request.api_version, route)
    if route == "chat":
        options = ContextOptions.parse(body.get("context_options"))
    elif "context_options" in body:
        raise InvalidArgument(COMPLETIONS_CONTEXT_OPTIONS)
    else:
        options = DEFAULT_OPTIONS
    answer = backend.answer(
        request.params["name"],
        body.get("messages"),
        body.get("model"),
        body.get("filter"),
        body.get("temperature"),
        new_api=_new_api(request),
        context_options=options,
    )
    return answer, body


def _streaming(body: dict[str, Any]) -> bool:
    return body.get("stream") in (True, "true")


def chat_completions(backend: Backend, request: Request) -> Response:
    answer, body = _answer(backend, request, "chat_completions")
    answer = answers.repeated(answer, request.answer_repeat)
    if _streaming(body):
        chunks = answers.completion_chunks(answer, backend.wire, request.stream_chunk_chars)
        return Response(200, events=chunks, sse_prefix=backend.wire.sse_prefix)
    return Response(200, answers.completion_body(answer, backend.wire))


def chat(backend: Backend, request: Request) -> Response:
    answer, body = _answer(backend, request, "chat")
    highlights = bool(body.get("include_highlights", False))
    if _streaming(body):
        if body.get("json_response"):
            raise InvalidArgument("json_response cannot be used with stream")
        return Response(200, events=answers.chat_events(answer, highlights))
    return Response(200, answers.chat_body(answer, highlights))


def context(backend: Backend, request: Request) -> Response:
    body = request.json()
    return Response(
        200,
        backend.context(
            request.params["name"],
            query=body.get("query"),
            messages=body.get("messages"),
            filter_=body.get("filter"),
            top_k=body.get("top_k"),
            snippet_size=body.get("snippet_size"),
            new_api=_new_api(request),
        ),
    )


_SEG = r"(?P<{}>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = [
    (
        method,
        re.compile(
            "^"
            + pattern.format(
                name=_SEG.format("name"), file_id=_SEG.format("file_id"), operation_id=_SEG.format("operation_id")
            )
            + "$"
        ),
        route,
        handler,
    )
    for method, pattern, route, handler in [
        ("POST", "/assistant/assistants", "create_assistant", create_assistant),
        ("GET", "/assistant/assistants", "list_assistants", list_assistants),
        ("GET", "/assistant/assistants/{name}", "describe_assistant", describe_assistant),
        ("PATCH", "/assistant/assistants/{name}", "update_assistant", update_assistant),
        ("DELETE", "/assistant/assistants/{name}", "delete_assistant", delete_assistant),
        ("POST", "/assistant/files/{name}", "upload_file", upload_file),
        ("GET", "/assistant/files/{name}", "list_files", list_files),
        ("GET", "/assistant/files/{name}/{file_id}", "describe_file", describe_file),
        ("PUT", "/assistant/files/{name}/{file_id}", "upload_file", upload_file),
        ("DELETE", "/assistant/files/{name}/{file_id}", "delete_file", delete_file),
        ("GET", "/assistant/operations/{name}", "list_operations", list_operations),
        ("GET", "/assistant/operations/{name}/{operation_id}", "describe_operation", describe_operation),
        ("POST", "/assistant/chat/{name}/chat/completions", "chat_completions", chat_completions),
        ("POST", "/assistant/chat/{name}/context", "context", context),
        ("POST", "/assistant/chat/{name}", "chat", chat),
    ]
]


def match(method: str, path: str) -> tuple[str, Handler, dict[str, str]] | None:
    """The route name, handler and URL-decoded path parameters; route ``"405"`` if only the method is wrong."""
    path_known = False
    for route_method, pattern, route, handler in ROUTES:
        found = pattern.match(path)
        if found:
            path_known = True
            if route_method == method:
                return route, handler, {k: unquote(v) for k, v in found.groupdict().items()}
    if path_known:
        return "405", chat, {}
    return None
