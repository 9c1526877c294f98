"""Make moto's DynamoDB apply each operation atomically, as DynamoDB does.

moto's server answers requests on several threads, and its DynamoDB backend reads, changes and writes items
without a lock: two concurrent ``ADD`` updates of one counter item (or a transaction and an update) can
lose one of the changes. DynamoDB never does, and citeq's batch counters rely on that. One lock around the
item operations restores the guarantee for the local stack and the tests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.RLock()
_OPERATIONS = ("put_item", "get_item", "update_item", "delete_item", "query", "scan", "transact_write_items")
_patched = False


def make_dynamodb_atomic() -> None:
    """Patch moto's DynamoDB backend once per process."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name)

        def locked(original: Callable[..., Any] = original) -> Callable[..., Any]:
            @functools.wraps(original)
            def call(*args: Any, **kwargs: Any) -> Any:
                with _LOCK:
                    return original(*args, **kwargs)

            return call

        setattr(DynamoDBBackend, name, locked())
    _patched = True
