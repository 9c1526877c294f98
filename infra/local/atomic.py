"""Make moto's DynamoDB apply each operation atomically, as DynamoDB does, and transactions cheaply.

moto's server answers requests on several threads, and its DynamoDB backend reads, changes and writes items
without a lock: two concurrent ``ADD`` updates of one counter item (or a transaction and an update) can
lose one of the changes. DynamoDB never does, and citeq's batch counters rely on that. One lock around the
item operations restores the guarantee for the local stack and the tests.

moto also deep-copies every table a transaction touches (to roll back on failure), so each transaction
costs time and memory in proportion to the whole table: a 1,000-request batch took minutes and gigabytes.
Under the lock a transaction here checks every condition first and only then applies the writes, saving
just the items it touches in case a write fails: all or nothing, as DynamoDB does, at the cost of the items
involved.

Plain update expressions skip moto's expression machinery (``quick_update``): same result, a tenth of the CPU.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from infra.local.quick_update import quick_update_item

# Held by every item operation; the stream trim (``quick_streams``) takes it too.
WRITE_LOCK = threading.RLock()
_OPERATIONS = ("put_item", "get_item", "update_item", "delete_item", "query", "scan", "transact_write_items")
_patched = False


def _key(backend: Any, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    """All-or-nothing TransactWriteItems: conditions first, then the writes (with per-item rollback)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    actions = []
    seen: set[tuple[str, str]] = set()
    for entry in transact_items:
        if len(entry) != 1:
            raise TransactWriteSingleOpException()
        op_type, op = next(iter(entry.items()))
        key = _key(backend, op_type, op)
        marker = (op["TableName"], str(sorted(key.items())))
        if marker in seen:
            raise MultipleTransactionsException()
        seen.add(marker)
        actions.append((op_type, op, key))
    errors: list[tuple[str | None, str | None, Any]] = []
    for _, op, key in actions:
        current = backend.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        passed = condition is None or get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current)
        if passed:
            errors.append((None, None, None))
        else:
            old = (
                current.to_json()["Attributes"]
                if current and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                else None
            )
            errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
    if any(code for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    saved = [(op["TableName"], key, backend.get_item(op["TableName"], key)) for _, op, key in actions]
    try:
        for op_type, op, key in actions:
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                backend.put_item(op["TableName"], op["Item"])
            elif op_type == "Delete":
                backend.delete_item(op["TableName"], key)
            elif op_type == "Update":
                backend.update_item(
                    op["TableName"],
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
    except Exception:
        for table_name, key, item in saved:
            if item is None:
                backend.delete_item(table_name, key)
            else:
                backend.put_item(table_name, item.to_json()["Attributes"])
        raise


def make_dynamodb_atomic() -> None:
    """Patch moto's DynamoDB backend once per process."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend.update_item = quick_update_item(DynamoDBBackend.update_item)  # type: ignore[method-assign]
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name)

        def locked(original: Callable[..., Any] = original) -> Callable[..., Any]:
            @functools.wraps(original)
            def call(*args: Any, **kwargs: Any) -> Any:
                with WRITE_LOCK:
                    return original(*args, **kwargs)

            return call

        setattr(DynamoDBBackend, name, locked())
    _patched = True
