"""The service's metadata filter language, evaluated against a file's metadata.

Fields are implicitly ANDed; ``$and``/``$or`` combine clauses; per field: ``$eq $ne $gt $gte $lt $lte
$in $nin $exists`` and ``$not`` (``{"genre": {"$not": {"$eq": "drama"}}}``, the operators inside it negated);
a bare value means ``$eq``; a list-valued field matches if any element matches.

The service's docs (guides/assistant/file-metadata) call a bare list (``{"genre": ["a", "b"]}``) and a
list-valued ``$eq`` invalid queries: they are 400s here, never a filter that silently matches nothing
(issue 12). The same goes for a list operand of ``$ne``/``$gt``/``$gte``/``$lt``/``$lte`` and for an object
where a scalar is expected (assumed: the docs allow only strings, numbers and booleans there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infra.emulator.exceptions import InvalidArgument

_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    def compare(value: Any, operand: Any) -> bool:
        if not _is_number(value):
            return False
        return {
            "$gt": value > operand,
            "$gte": value >= operand,
            "$lt": value < operand,
            "$lte": value <= operand,
        }[op]

    return compare


def _in(value: Any, operand: Any) -> bool:
    return value in operand


_SCALAR_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda value, operand: value == operand,
    "$gt": _ordered("$gt"),
    "$gte": _ordered("$gte"),
    "$lt": _ordered("$lt"),
    "$lte": _ordered("$lte"),
    "$in": _in,
}
# Negated operators: true when no element matches the positive form.
_NEGATED = {"$ne": "$eq", "$nin": "$in"}


def validate(expr: Any) -> None:
    """Raise ``InvalidArgument`` for a filter the service would reject; evaluating ``{}`` meta checks all."""
    if not isinstance(expr, Mapping):
        raise InvalidArgument("filter must be a JSON object")
    matches(expr, {})


def matches(expr: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies the filter ``expr``."""
    results = []
    for key, clause in expr.items():
        if key in ("$and", "$or"):
            if not isinstance(clause, list) or not all(isinstance(c, Mapping) for c in clause):
                raise InvalidArgument(f"{key} requires a list of filter objects")
            parts = [matches(c, metadata) for c in clause]
            results.append(all(parts) if key == "$and" else any(parts))
        elif key.startswith("$"):
            raise InvalidArgument(f"Unsupported filter operator '{key}'")
        else:
            results.append(_field_matches(metadata.get(key, _MISSING), clause))
    return all(results)


def _field_matches(value: Any, clause: Any) -> bool:
    if not isinstance(clause, Mapping):
        if isinstance(clause, list):
            raise InvalidArgument("Invalid filter: a list is not a value; use $in to match any of several values")
        clause = {"$eq": clause}
    if not clause:
        raise InvalidArgument("Invalid filter: an empty operator object")
    ok = True
    for op, operand in clause.items():
        if op == "$not":
            if not isinstance(operand, Mapping) or not operand:
                raise InvalidArgument('Operator $not requires an object of operators, e.g. {"$not": {"$eq": 1}}')
            if any(not str(key).startswith("$") for key in operand):
                raise InvalidArgument("Operator $not takes operators, not field names")
            ok = not _field_matches(value, operand) and ok
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidArgument("Operator $exists requires a boolean")
            ok = ok and ((value is not _MISSING) == operand)
        elif op in _NEGATED:
            _check_operand(op, operand)
            ok = ok and not _any(value, _NEGATED[op], operand)
        elif op in _SCALAR_OPS:
            _check_operand(op, operand)
            ok = ok and _any(value, op, operand)
        else:
            raise InvalidArgument(f"Unsupported filter operator '{op}'")
    return ok


def _check_operand(op: str, operand: Any) -> None:
    if op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte") and isinstance(operand, list | Mapping):
        raise InvalidArgument(f"Operator {op} requires a single value, not a list or object")
    if op in ("$in", "$nin") and isinstance(operand, list) and any(isinstance(v, list | Mapping) for v in operand):
        raise InvalidArgument(f"Operator {op} requires a list of values")
    if op in ("$gt", "$gte", "$lt", "$lte") and not _is_number(operand):
        raise InvalidArgument(f"Operator {op} requires a number")
    if op in ("$in", "$nin") and not isinstance(operand, list):
        raise InvalidArgument(f"Operator {op} requires a list")


def _any(value: Any, op: str, operand: Any) -> bool:
    compare = _SCALAR_OPS[op]
    if value is _MISSING:
        return False
    values = value if isinstance(value, list) else [value]
    return any(compare(v, operand) for v in values)
