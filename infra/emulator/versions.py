"""API versions (``X-Pinecone-Api-Version``) and what each one allows: models, the file-operations API.

Sources (``../shared/reference``): the model enums of ``assistant_data_{2025-01,2025-04,2025-10,2026-04}``
OAS; the 2026-07 conformance tests of the Python SDK, which quote the backend's 400 for a model outside the
enum and say 2026-07 is served by the 2026-04 handlers.

Assumptions where no source speaks (kept strict: the emulator must never be kinder than the service):

- a request without the header gets the oldest supported stable version (the docs' rule), taken as 2025-01;
- a version not in ``KNOWN`` is a 400 naming the known ones (whether the service rejects or maps an unknown
  version is not documented);
- ``2026-01.alpha`` (the release candidate whose spec equals 2026-04's) behaves as 2026-04;
- the model message of the 2026-07 fixture is used for every version.
"""

from __future__ import annotations

from infra.emulator.exceptions import InvalidArgument

KNOWN = ("2025-01", "2025-04", "2025-10", "2026-01.alpha", "2026-04", "2026-07")
DEFAULT = "2025-01"
# The first version with the 202 + operation file API, the operations routes and list pagination.
OPERATIONS_SINCE = "2026-01.alpha"

_MODELS_2025_01 = ("gpt-4o", "claude-3-5-sonnet")
_MODELS_2025 = ("gpt-4o", "gpt-4.1", "o4-mini", "claude-3-5-sonnet", "claude-3-7-sonnet", "gemini-2.5-pro")
# 2026 specs: the completions enum lacks gpt-5, which standard chat lists (order as the backend's message).
_MODELS_2026_COMPLETIONS = ("gpt-4o", "gpt-4.1", "o4-mini", "claude-sonnet-4-5", "gemini-2.5-pro")
_MODELS_2026_CHAT = ("gpt-4o", "gpt-4.1", "o4-mini", "gpt-5", "claude-sonnet-4-5", "gemini-2.5-pro")


def resolve(header: str | None) -> str:
    """The version a request is served at; 400 for one the emulator does not know."""
    if header is None:
        return DEFAULT
    version = header.strip()
    if version not in KNOWN:
        raise InvalidArgument(
            f"Unsupported API version '{version}' in X-Pinecone-Api-Version. Supported versions: {', '.join(KNOWN)}"
        )
    return version


def has_operations(version: str) -> bool:
    """Whether the version has the 2026-04 file API (202 + operation, operations routes, pagination)."""
    return KNOWN.index(version) >= KNOWN.index(OPERATIONS_SINCE)


def models(version: str, route: str) -> tuple[str, ...]:
    """The model names a route accepts at a version (``route`` is ``chat`` or ``chat_completions``)."""
    if version == "2025-01":
        return _MODELS_2025_01
    if not has_operations(version):
        return _MODELS_2025
    return _MODELS_2026_CHAT if route == "chat" else _MODELS_2026_COMPLETIONS


def check_model(model: str, version: str, route: str) -> None:
    """400 with the service's message when ``model`` is not in the version's enum."""
    allowed = models(version, route)
    if model not in allowed:
        raise InvalidArgument(f"Invalid model `{model}`. Expected one of: {', '.join(allowed)}.")
