"""The standard chat's ``context_options``: checked as the service checks them, and what they change.

Facts (OAS 2026-04 ``ContextOptionsModel``; shared reference ``pinecone-assistant-api.md`` §5 and §6):
- ``top_k``: the most context snippets sent to the LLM; default 16, maximum 64. The spec gives no minimum; the
  ``pinecone==10.2.0`` SDK (``models/assistant/options.py``) writes that the backend accepts 1-64 and rejects 0
  with a 400, so 1 is the minimum here;
- ``snippet_size``: the most tokens in one snippet; default 2048, minimum 512, maximum 8192 (the same SDK: outside
  that range is a 400);
- ``multimodal`` (default true): send image-related snippets; ``include_binary_content`` (default true): send
  their base64 image data, not only the caption. The emulator's snippets are all text, so these two are checked
  and change nothing else.

Chosen here [infer], on the side of refusing (the emulator must never be kinder than the service):
- an unknown key, or a value of the wrong JSON type (a string or float for an integer, a number for a boolean),
  is a 400 ``INVALID_ARGUMENT``; whether the service ignores unknown keys is not known;
- JSON ``null`` for the object or a field means "not given" (the SDK leaves unset fields out; a null is how an
  optional field reads in the spec);
- the messages are the emulator's own; the service's wording is not known.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from infra.emulator.exceptions import InvalidArgument

DEFAULT_TOP_K = 16
MAX_TOP_K = 64
DEFAULT_SNIPPET_SIZE = 2048
MIN_SNIPPET_SIZE = 512
MAX_SNIPPET_SIZE = 8192
# Characters per token of the emulator's token estimate (answers.approx_tokens: OpenAI's rule of thumb).
CHARS_PER_TOKEN = 4


def integer_in(value: Any, name: str, low: int, high: int) -> int:
    """``value`` if it is a JSON integer in ``[low, high]``, else the service's 400 naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer between {low} and {high}, got {value!r}")
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be a boolean, got {value!r}")
    return value


@dataclass(frozen=True)
class ContextOptions:
    """How much retrieved context a standard chat sends to the LLM (units and sources: module docstring)."""

    top_k: int = DEFAULT_TOP_K  # snippets
    snippet_size: int = DEFAULT_SNIPPET_SIZE  # tokens per snippet
    multimodal: bool = True
    include_binary_content: bool = True

    @classmethod
    def parse(cls, value: Any) -> ContextOptions:
        """The options a request's ``context_options`` asks for (None: the defaults), or the service's 400."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise InvalidArgument(f"context_options must be an object, got {value!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise InvalidArgument(
                f"context_options has unknown field(s) {', '.join(unknown)}; known fields: {', '.join(known)}"
            )
        given = {k: v for k, v in value.items() if v is not None}
        return cls(
            top_k=integer_in(given.get("top_k", DEFAULT_TOP_K), "context_options.top_k", 1, MAX_TOP_K),
            snippet_size=integer_in(
                given.get("snippet_size", DEFAULT_SNIPPET_SIZE),
                "context_options.snippet_size",
                MIN_SNIPPET_SIZE,
                MAX_SNIPPET_SIZE,
            ),
            multimodal=_boolean(given.get("multimodal", True), "context_options.multimodal"),
            include_binary_content=_boolean(
                given.get("include_binary_content", True), "context_options.include_binary_content"
            ),
        )

    @property
    def snippet_chars(self) -> int:
        """The most characters of one snippet sent to the LLM (``snippet_size`` tokens at 4 characters each)."""
        return self.snippet_size * CHARS_PER_TOKEN

    @property
    def context_share(self) -> float:
        """These options' context as a share of the default one (16 snippets of up to 2,048 tokens).

        A context size drawn for a default chat (``plan.PlanConfig.context_tokens``: 9k-25k tokens, as in every
        real sample) is scaled by this share: ``top_k`` bounds the number of snippets and ``snippet_size`` the
        tokens of each, so the context can hold at most ``top_k * snippet_size`` tokens [infer: linear in both].
        """
        return (self.top_k / DEFAULT_TOP_K) * (self.snippet_size / DEFAULT_SNIPPET_SIZE)


DEFAULT_OPTIONS = ContextOptions()
