"""Text that can travel: JSON parsed without recursion errors, and strings SQS and DynamoDB accept (issue 11)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from citeq.errors import ValidationError

# Characters SQS refuses in a body (its allowed set is #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF).
# JSON escapes the control characters, so what can still reach SQS raw is a surrogate or U+FFFE/U+FFFF; a lone
# surrogate cannot be encoded as UTF-8 at all, so DynamoDB cannot store it either (issue 11).
_CANNOT_TRAVEL = re.compile("[\ud800-\udfff\ufffe\uffff]")
MAX_DEPTH = 32
# Python's own bound on int <-> str conversion (sys.int_info.default_max_str_digits): json.loads raises a bare
# ValueError past it, and a value that long is no caller's number.
MAX_INT_DIGITS = 4300


def _where(path: list[str]) -> str:
    return ".".join(path) or "the value"


def check_text(value: Any, *, field: str = "") -> None:
    """Raise citeq's ValidationError naming the field and character if any string (key or value) in ``value``
    cannot be sent to SQS or stored in DynamoDB, or naming the field of a NaN or infinite number (JSON has none:
    the assistant's client refuses to send one, and exports would not parse); nesting deeper than MAX_DEPTH is
    refused too."""
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
        elif isinstance(current, float) and not math.isfinite(current):
            raise ValidationError(f"{_where(path)} is {current!r}, which is not a JSON number")
        elif isinstance(current, dict):
            for key, item in current.items():
                stack.append((key, [*path, "(a key)"]))
                stack.append((item, [*path, str(key)]))
        elif isinstance(current, list | tuple):
            stack.extend((item, [*path, f"[{index}]"]) for index, item in enumerate(current))


def loads(text: str | bytes, *, what: str = "the body", max_depth: int = MAX_DEPTH) -> Any:
    """JSON text or UTF-8 bytes -> value; citeq's ValidationError (never RecursionError or a bare ValueError) for
    invalid JSON, bad UTF-8, nesting past ``max_depth``, a key repeated in one object, NaN or an infinite number
    (``NaN``, ``Infinity``, ``1e400``: not JSON, though Python's parser takes them), or an integer of more than
    MAX_INT_DIGITS digits."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"{what} is not UTF-8 (byte {exc.start + 1})") from None
    if _depth_exceeds(text, max_depth):
        raise ValidationError(f"{what} is nested more than {max_depth} levels deep")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_not_a_number,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except ValidationError as exc:
        raise ValidationError(f"{what}: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError as exc:
        raise ValidationError(f"{what} is not valid JSON ({type(exc).__name__})") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The last of two equal keys would win silently: a question or an option the caller did not mean.
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValidationError(f"the key {key!r} appears more than once in one object")
        value[key] = item
    return value


def _not_a_number(constant: str) -> Any:
    raise ValidationError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError(f"{text[:40]} is too large a number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValidationError(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


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
