"""The answer object, citeq's common currency: the assistant's standard-chat shape with structured citations.

JSON form (``Answer.to_dict``)::

    {"id", "model", "finish_reason",
     "message": {"role", "content": <answer text with markers removed>},
     "citations": [{"position", "references": [{"file": {"name", "id", "signed_url", "url_expires_at"},
                                                "pages": [...]}]}],
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
     "raw_content": <content as received>}

A marker whose number has no entry in the References list is kept as a reference with ``"file": null``
and ``"missing_reference": <n>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict


class UsageDict(TypedDict):
    """Token counts as the service reports them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage_from(value: Any) -> UsageDict | None:
    """Token counts from a wire payload; None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    try:
        return UsageDict(
            prompt_tokens=int(value["prompt_tokens"]),
            completion_tokens=int(value["completion_tokens"]),
            total_tokens=int(value["total_tokens"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class FileRef:
    """A cited file, as far as the References list tells it."""

    name: str
    signed_url: str | None = None
    id: str | None = None
    url_expires_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "id": self.id, "signed_url": self.signed_url, "url_expires_at": self.url_expires_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRef:
        """Inverse of ``to_dict``."""
        return cls(data["name"], data.get("signed_url"), data.get("id"), data.get("url_expires_at"))


@dataclass(frozen=True, slots=True)
class Reference:
    """One file (and pages) supporting a citation; ``file`` is None when the marker's number was not listed."""

    file: FileRef | None
    pages: tuple[int, ...] = ()
    missing_reference: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        data: dict[str, Any] = {"file": self.file.to_dict() if self.file else None, "pages": list(self.pages)}
        if self.missing_reference is not None:
            data["missing_reference"] = self.missing_reference
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        """Inverse of ``to_dict``."""
        file = FileRef.from_dict(data["file"]) if data.get("file") else None
        return cls(file, tuple(data.get("pages") or ()), data.get("missing_reference"))


@dataclass(frozen=True, slots=True)
class Citation:
    """A position in ``message.content`` and the references supporting the text just before it."""

    position: int
    references: tuple[Reference, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"position": self.position, "references": [r.to_dict() for r in self.references]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        """Inverse of ``to_dict``."""
        return cls(int(data["position"]), tuple(Reference.from_dict(r) for r in data["references"]))


@dataclass(frozen=True)
class ParsedContent:
    """What the citation parser makes of one content string."""

    text: str
    citations: tuple[Citation, ...] = ()
    files: tuple[FileRef, ...] = ()


@dataclass(frozen=True)
class Answer:
    """A cited answer."""

    id: str
    model: str
    content: str
    citations: tuple[Citation, ...] = ()
    usage: UsageDict | None = None
    finish_reason: str | None = "stop"
    raw_content: str = ""
    role: str = "assistant"
    files: tuple[FileRef, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The standard-chat-shaped JSON form shared by every store, export, response and callback."""
        return {
            "id": self.id,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "message": {"role": self.role, "content": self.content},
            "citations": [c.to_dict() for c in self.citations],
            "usage": dict(self.usage) if self.usage else None,
            "raw_content": self.raw_content,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """Inverse of ``to_dict``."""
        usage = data.get("usage")
        citations = tuple(Citation.from_dict(c) for c in data.get("citations") or ())
        files: dict[str, FileRef] = {}
        for citation in citations:
            for ref in citation.references:
                if ref.file is not None:
                    files.setdefault(ref.file.name, ref.file)
        return cls(
            id=data["id"],
            model=data["model"],
            content=data["message"]["content"],
            citations=citations,
            usage=usage_from(usage),
            finish_reason=data.get("finish_reason"),
            raw_content=data.get("raw_content", ""),
            role=data["message"].get("role", "assistant"),
            files=tuple(files.values()),
        )
