"""Text that can travel: JSON parsed without recursion errors, and strings SQS and DynamoDB accept (issue 11)."""

from __future__ import annotations

import json
import re
from typing import Any

from citeq.errors import ValidationError

# Characters SQS refuses in a body (its allowed set is #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF).
# JSON escapes the control characters, so what can still reach SQS raw is a surrogate or U+FFFE/U+FFFF; a lone
# surrogate cannot be encoded as UTF-8 at all, so DynamoDB cannot store it either (issue 11).
_CANNOT_TRAVEL = re.compile("[\ud800-\udfff\ufffe\uffff]")
MAX_DEPTH = 32


def _where(path: list[str]) -> str:
    return ".".join(path) or "the value"


def check_text(value: Any, *, field: str = "") -> None:
    """Raise citeq's ValidationError naming the field and character if any string (key or value) in ``value``
    cannot be sent to SQS or stored in DynamoDB; nesting deeper than MAX_DEPTH is refused too."""
    # Iterative, so hostile nesting cannot exhaust the stack.
    stack: list[tuple[Any, list[str]]] = [(value, [field] if field else [])]
    while stack:
        current, path = stack.pop()
        if len(path) > MAX_DEPTH + 1:
            raise ValidationError(f"{_where(path[:3])}...: nested more than {MAX_DEPTH} levels deep")
        if isinstance(current, str):
            found = _CANNOT_TRAVEL.search(current)
            if found:
                raise ValidationError(
                    f"{_where(path)} holds U+{ord(found.group()):04X} at character {found.start() + 1}, which "
                    "cannot be sent to SQS or stored in DynamoDB (a lone surrogate or a non-character)"
                )
        elif isinstance(current, dict):
            for key, item in current.items():
                stack.append((key, [*path, "(a key)"]))
                stack.append((item, [*path, str(key)]))
        elif isinstance(current, list | tuple):
            stack.extend((item, [*path, f"[{index}]"]) for index, item in enumerate(current))


def loads(text: str | bytes, *, what: str = "the body", max_depth: int = MAX_DEPTH) -> Any:
    """JSON text or UTF-8 bytes -> value; citeq's ValidationError (never RecursionError) for invalid JSON, bad
    UTF-8 or nesting past ``max_depth``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{what} is not UTF-8 (byte {exc.start + 1})") from None
    if _depth_exceeds(text, max_depth):
        raise ValidationError(f"{what} is nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError as exc:
        raise ValidationError(f"{what} is not valid JSON ({type(exc).__name__})") from None


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a scan, before the recursive parser runs)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False
