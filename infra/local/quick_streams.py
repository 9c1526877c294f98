"""Keep moto's DynamoDB stream from growing without end.

moto keeps every change record of a table with a stream for the life of the process (it trims only for its
own Lambda event source mappings); DynamoDB keeps them 24 hours. The local stack has exactly one reader per
stream, the dispatcher's poller, which never reads behind the position it last asked for, so records before
that position are dropped when it asks (sequence numbers stay as they were).

moto numbers a new record from the list's length and the first number; the trim changes both, so it runs
under the lock every DynamoDB write (and so every record's ``add``) already holds (``infra.local.atomic``):
otherwise a write between the two changes could number its record past records not yet read, and the reader
would skip them.
"""

from __future__ import annotations

from typing import Any

from infra.local.atomic import WRITE_LOCK

_patched = False


def make_streams_trim() -> None:
    """Patch moto's ``StreamShard.get`` once per process to drop the records before the one asked for."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models.table import StreamShard

    original = StreamShard.get

    def get(self: Any, start: int, quantity: int) -> list[dict[str, Any]]:
        with WRITE_LOCK:
            consumed = start - self.starting_sequence_number
            if consumed > 0:
                del self.items[:consumed]
                self.starting_sequence_number = start
            return original(self, start, quantity)  # type: ignore[no-any-return]

    StreamShard.get = get  # type: ignore[method-assign]
    _patched = True
