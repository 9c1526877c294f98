"""Feeds a DynamoDB-stream-triggered handler the way Lambda's event source mapping does.

- one shard at a time, in order, from ``TRIM_HORIZON``; up to ``batch_size`` records an invocation;
- records that match none of the mapping's ``FilterCriteria`` patterns are dropped before the handler
  (and checkpointed), as Lambda's event filtering does;
- with ``ReportBatchItemFailures`` the response's first ``itemIdentifier`` (a sequence number) is where the
  next invocation starts; a raised exception or a malformed response retries the whole batch; the poller
  never skips a record (the template's MaximumRetryAttempts is -1).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.local.context import LambdaContext

log = logging.getLogger("infra.local.stream_poller")
Handler = Callable[[dict[str, Any], Any], Any]


def matches(pattern: Any, value: Any) -> bool:
    """Whether ``value`` matches a Lambda event-filtering pattern (the subset citeq's template uses: nested
    objects, lists of exact values, ``{"prefix": ...}`` and ``{"exists": bool}``)."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for key, sub in pattern.items():
            if isinstance(sub, list) and any(isinstance(c, dict) and c.get("exists") is False for c in sub):
                if key in value:
                    return False
                continue
            if key not in value or not matches(sub, value[key]):
                return False
        return True
    if isinstance(pattern, list):
        return any(_leaf(choice, value) for choice in pattern)
    return bool(pattern == value)


def _leaf(choice: Any, value: Any) -> bool:
    if isinstance(choice, dict):
        if "prefix" in choice:
            return isinstance(value, str) and value.startswith(choice["prefix"])
        if "exists" in choice:
            return bool(choice["exists"])
        return False
    return bool(choice == value)


@dataclass
class StreamStats:
    """What the poller has done so far."""

    invocations: int = 0
    records: int = 0
    filtered: int = 0
    failures: int = 0
    errors: int = 0


class StreamPoller:
    """Polls one table stream and invokes a handler with the event source mapping's semantics."""

    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        handler: Handler,
        *,
        batch_size: int = 100,
        filters: list[dict[str, Any]] | None = None,
        timeout: float = 60.0,
        idle_wait: float = 0.05,
        retry_wait: float = 0.2,
    ) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.handler = handler
        self.batch_size = batch_size
        self.filters = filters or []
        self.timeout = timeout
        self.idle_wait = idle_wait
        self.retry_wait = retry_wait
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._position: str | None = None

    def start(self) -> StreamPoller:
        """Start polling on a thread."""
        self._thread = threading.Thread(target=self._loop, name="citeq-stream-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current invocation."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the poller has caught up with the stream (nothing left to read); False on timeout."""
        self._idle.clear()
        return self._idle.wait(timeout)

    def _iterator(self, kind: str, sequence: str | None = None) -> str:
        shard = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"][0]
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard["ShardId"], "ShardIteratorType": kind}
        if sequence is not None:
            kwargs["SequenceNumber"] = sequence
        return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])

    def poll_once(self) -> bool:
        """Read the next batch and invoke the handler with it; False when the stream had nothing new."""
        if self._position is None:
            self._position = self._iterator("TRIM_HORIZON")
        result = self.streams.get_records(ShardIterator=self._position, Limit=self.batch_size)
        records = result.get("Records", [])
        if not records:
            self._position = result.get("NextShardIterator") or self._position
            return False
        retry_from = self.invoke(records)
        if retry_from is None:
            self._position = result.get("NextShardIterator") or self._position
        else:
            self._position = self._iterator("AT_SEQUENCE_NUMBER", retry_from)
            time.sleep(self.retry_wait)
        return True

    def drain(self, max_batches: int = 10_000) -> None:
        """Poll until the stream has nothing new (for tests that run without the polling thread)."""
        for _ in range(max_batches):
            if not self.poll_once():
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.poll_once():
                    self._idle.set()
                    time.sleep(self.idle_wait)
            except Exception:  # a poller must survive anything the stream does
                log.exception("stream polling failed")
                self.stats.errors += 1
                self._position = None
                time.sleep(self.retry_wait)

    def invoke(self, records: list[dict[str, Any]]) -> str | None:
        """Invoke the handler with the records that pass the filters; the sequence number to retry from, or
        None when the batch is done."""
        event_records = [_lambda_record(r, self.stream_arn) for r in records]
        chosen = [r for r in event_records if not self.filters or any(matches(p, r) for p in self.filters)]
        self.stats.filtered += len(event_records) - len(chosen)
        if not chosen:
            return None
        self.stats.invocations += 1
        self.stats.records += len(chosen)
        first = str(chosen[0]["dynamodb"]["SequenceNumber"])
        try:
            response = self.handler({"Records": chosen}, LambdaContext(timeout_seconds=self.timeout))
        except Exception:
            log.exception("stream handler raised: the batch is retried")
            self.stats.errors += 1
            return first
        if response in (None, {}):
            return None
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not isinstance(failures, list):
            self.stats.errors += 1
            return first
        if not failures:
            return None
        self.stats.failures += 1
        identifier = failures[0].get("itemIdentifier") if isinstance(failures[0], dict) else None
        known = {str(r["dynamodb"]["SequenceNumber"]) for r in chosen}
        return str(identifier) if identifier in known else first


def _lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda delivers it (JSON-safe, with the stream's ARN)."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = created.timestamp()
    out = {**record, "dynamodb": change, "eventSourceARN": stream_arn}
    # Lambda's JSON event carries binary attributes as base64 text.
    return dict(json.loads(json.dumps(out, default=_json_value)))


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return str(value)
