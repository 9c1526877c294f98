"""A short path through moto's DynamoDB ``update_item`` for the plainest update expressions.

moto parses every UpdateExpression into a syntax tree, deep-copies it and walks it with seven validators
before applying it: about 1 ms of CPU per updated item, which made DynamoDB the local pipeline's bottleneck
(each answer updates five items). Most updates citeq and Powertools make are plain:

    SET #a = :v, name = :w    REMOVE #b    ADD #n :number

Those are applied here directly, with DynamoDB's semantics; anything else (functions, arithmetic, nested
paths, sets, key attributes, two actions on one attribute, reserved words, an unknown placeholder, an item
that would grow past the size limit) goes to moto's own implementation, which also produces the errors. A
table with a stream gets its change record here too (old and new image), as moto's own update adds one.
``tests/unit/local/test_quick_moto.py`` checks both paths give the same items.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

_CLAUSE = re.compile(r"\b(SET|REMOVE|ADD)\b", re.IGNORECASE)
_PATH = r"(#[A-Za-z0-9_]+|[A-Za-z_][A-Za-z0-9_]*)"
_VALUE = r"(:[A-Za-z0-9_]+)"
_SET = re.compile(rf"^\s*{_PATH}\s*=\s*{_VALUE}\s*$")
_ADD = re.compile(rf"^\s*{_PATH}\s+{_VALUE}\s*$")
_REMOVE = re.compile(rf"^\s*{_PATH}\s*$")
_SETTABLE = {"S", "N", "B", "BOOL", "NULL", "M", "L"}
Action = tuple[str, str, str | None]  # (SET | REMOVE | ADD, placeholder or name, value placeholder)


@functools.lru_cache(maxsize=512)
def plan(expression: str) -> tuple[Action, ...] | None:
    """The actions of a plain update expression, or None when it is not plain."""
    parts = _CLAUSE.split(expression)
    if parts[0].strip() or len(parts) < 3:
        return None
    actions: list[Action] = []
    seen_clauses: set[str] = set()
    for keyword, body in zip(parts[1::2], parts[2::2], strict=True):
        clause = keyword.upper()
        if clause in seen_clauses:
            return None
        seen_clauses.add(clause)
        pattern = {"SET": _SET, "ADD": _ADD, "REMOVE": _REMOVE}[clause]
        for piece in body.split(","):
            match = pattern.match(piece)
            if match is None:
                return None
            actions.append((clause, match.group(1), match.group(2) if clause != "REMOVE" else None))
    return tuple(actions)


@functools.lru_cache(maxsize=1)
def _reserved() -> frozenset[str]:
    from moto.dynamodb.parsing.reserved_keywords import ReservedKeywords

    return frozenset(word.upper() for word in ReservedKeywords.get_reserved_keywords())


def _resolve(
    actions: tuple[Action, ...], table: Any, names: dict[str, str] | None, values: dict[str, Any] | None
) -> list[tuple[str, str, dict[str, Any] | None]] | None:
    """Actions with names and values filled in; None when moto must handle (or reject) the update."""
    names, values = names or {}, values or {}
    keys = set(table.table_key_attrs)
    for index in list(table.global_indexes or []) + list(table.indexes or []):
        keys.update(index.schema_key_attrs)
    resolved = []
    touched: set[str] = set()
    for clause, path, placeholder in actions:
        if path.startswith("#"):
            if path not in names:
                return None
            name = names[path]
        elif path.upper() in _reserved():
            return None
        else:
            name = path
        if name in keys or name in touched:
            return None
        touched.add(name)
        value = None
        if placeholder is not None:
            if placeholder not in values or len(values[placeholder]) != 1:
                return None
            value = values[placeholder]
            kind = next(iter(value))
            if (clause == "SET" and kind not in _SETTABLE) or (clause == "ADD" and kind != "N"):
                return None
        resolved.append((clause, name, value))
    return resolved


def quick_update_item(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap moto's ``DynamoDBBackend.update_item`` with the short path."""
    from moto.dynamodb.comparisons import create_condition_expression_parser
    from moto.dynamodb.exceptions import ConditionalCheckFailed
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, ItemSizeTooLarge

    @functools.wraps(original)
    def update_item(
        self: Any,
        table_name: str,
        key: dict[str, dict[str, Any]],
        update_expression: str,
        expression_attribute_names: dict[str, Any],
        expression_attribute_values: dict[str, Any],
        attribute_updates: dict[str, Any] | None = None,
        expected: dict[str, Any] | None = None,
        condition_expression: str | None = None,
        return_values_on_condition_check_failure: str | None = None,
    ) -> Any:
        def moto() -> Any:
            return original(
                self,
                table_name,
                key,
                update_expression,
                expression_attribute_names,
                expression_attribute_values,
                attribute_updates,
                expected,
                condition_expression,
                return_values_on_condition_check_failure,
            )

        actions = plan(update_expression) if update_expression and not attribute_updates and not expected else None
        if actions is None:
            return moto()
        table = self.get_table(table_name)
        resolved = _resolve(actions, table, expression_attribute_names, expression_attribute_values)
        if resolved is None or set(key) != set(table.table_key_attrs):
            return moto()
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        item = table.get_item(hash_value, range_value)
        condition = create_condition_expression_parser(
            condition_expression, expression_attribute_names, expression_attribute_values
        ).parse()
        if not condition.expr(item):
            if return_values_on_condition_check_failure == "ALL_OLD" and item is not None:
                raise ConditionalCheckFailed(item=item.to_json()["Attributes"])
            raise ConditionalCheckFailed
        existed = item is not None
        if item is None:
            attrs = {table.hash_key_attr: key[table.hash_key_attr]}
            if table.range_key_attr:
                attrs[table.range_key_attr] = key[table.range_key_attr]
            table.put_item(attrs)
            item = table.get_item(hash_value, range_value)
            assert isinstance(item, Item)
        before = dict(item.attrs)
        try:
            for clause, name, value in resolved:
                if clause == "SET":
                    item.attrs[name] = DynamoType(value)
                elif clause == "REMOVE":
                    item.attrs.pop(name, None)
                else:
                    current = item.attrs.get(name, DynamoType({"N": "0"}))
                    if current.type != "N":
                        raise TypeError(name)
                    item.attrs[name] = current + DynamoType(value)
        except (ItemSizeTooLarge, TypeError):
            # Leave the item as it was and let moto apply (and reject) the update itself.
            item.attrs.clear()
            dict.update(item.attrs, before)
            return moto()
        if table.stream_shard is not None:
            old = None
            if existed:
                old = Item(hash_value, range_value, {})
                dict.update(old.attrs, before)
            table.stream_shard.add(old, item)
        return item

    return update_item
