"""Feeds an SQS-triggered handler the way Lambda's event source mapping does.

- up to ``max_concurrency`` invocations at once, each with up to ``batch_size`` records, gathered for up to
  ``window`` seconds;
- events in Lambda's SQS shape (``Records[].messageId/receiptHandle/body/attributes/...``);
- only successes are deleted: with ``ReportBatchItemFailures`` the records named in ``batchItemFailures``
  stay; a raised exception, a timeout or a malformed response leaves the whole batch;
- messages left on the queue come back after their visibility timeout (the queue's, or whatever the handler
  set), and the queue's redrive policy moves them to the DLQ after ``maxReceiveCount`` receives (moto does
  this on receive, as SQS does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from infra.local.context import LambdaContext

log = logging.getLogger("infra.local.poller")
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class PollerStats:
    """What the poller has done so far."""

    invocations: int = 0
    records: int = 0
    deleted: int = 0
    failed_records: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to the counters."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Poller:
    """Polls one queue and invokes a handler with Lambda's event source mapping semantics."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        window: float = 0.0,
        max_concurrency: int = 2,
        timeout: float = 120.0,
        region: str = "us-east-1",
        idle_wait: int = 1,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.handler = handler
        self.batch_size = batch_size
        self.window = window
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.region = region
        self.idle_wait = idle_wait
        self.stats = PollerStats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Poller:
        """Start ``max_concurrency`` polling threads."""
        for index in range(self.max_concurrency):
            thread = threading.Thread(target=self._loop, name=f"citeq-poller-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop polling; in-flight invocations finish first."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self._threads.clear()

    def _loop(self) -> None:
        # Like the event source mapping's pollers, fetch the next batch while this slot's invocation runs.
        # Deleting a finished batch's messages does not hold up the slot's next invocation either.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="citeq-prefetch") as prefetch,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="citeq-delete") as deleter,
        ):
            upcoming = prefetch.submit(self._gather)
            while not self._stop.is_set():
                try:
                    messages = upcoming.result()
                except Exception:  # a poller must survive anything SQS does
                    log.exception("receiving a batch failed")
                    self.stats.add(errors=1)
                    time.sleep(0.5)
                    messages = []
                if self._stop.is_set():
                    break  # a prefetched batch simply becomes visible again after its timeout
                upcoming = prefetch.submit(self._gather)
                if not messages:
                    continue
                try:
                    self.invoke(messages, deleter=deleter)
                except Exception:  # ...and anything one invocation does
                    log.exception("poller iteration failed")
                    self.stats.add(errors=1)

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        result = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, count),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(result.get("Messages", []))

    def _gather(self) -> list[dict[str, Any]]:
        """Receive up to ``batch_size`` messages, waiting at most ``window`` seconds to fill the batch."""
        messages = self._receive(self.batch_size, self.idle_wait)
        if not messages:
            return []
        deadline = time.monotonic() + self.window
        while len(messages) < self.batch_size and time.monotonic() < deadline:
            more = self._receive(self.batch_size - len(messages), 0)
            if more:
                messages.extend(more)
            else:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return messages

    def event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Lambda's SQS event for these messages."""
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {k: str(v) for k, v in m.get("Attributes", {}).items()},
                    "messageAttributes": {
                        name: {
                            "stringValue": a.get("StringValue"),
                            "binaryValue": a.get("BinaryValue"),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": a.get("DataType", "String"),
                        }
                        for name, a in m.get("MessageAttributes", {}).items()
                    },
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": self.region,
                }
                for m in messages
            ]
        }

    def invoke(self, messages: list[dict[str, Any]], deleter: ThreadPoolExecutor | None = None) -> set[str]:
        """Invoke the handler once; delete the successes (on ``deleter`` when given, else before returning);
        return the message ids left on the queue."""
        ids = {m["MessageId"] for m in messages}
        self.stats.add(invocations=1, records=len(messages))
        context = LambdaContext(timeout_seconds=self.timeout)
        try:
            response = self.handler(self.event(messages), context)
        except Exception:
            log.exception("handler raised: the whole batch stays on the queue")
            self.stats.add(errors=1, failed_records=len(ids))
            return ids
        if context.get_remaining_time_in_millis() <= 0:
            log.error("handler ran past its timeout: the whole batch stays on the queue")
            self.stats.add(errors=1, failed_records=len(ids))
            return ids
        failed = self._failures(response, ids)
        done = [m for m in messages if m["MessageId"] not in failed]
        self.stats.add(failed_records=len(failed))
        if deleter is None:
            self._delete(done)
        else:
            deleter.submit(self._delete, done)
        return failed

    def _delete(self, done: list[dict[str, Any]]) -> None:
        try:
            for start in range(0, len(done), 10):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ]
                self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception:  # the messages come back after their visibility timeout, as in Lambda
            log.exception("deleting a finished batch failed")
            self.stats.add(errors=1)
            return
        self.stats.add(deleted=len(done))

    @staticmethod
    def _failures(response: Any, ids: set[str]) -> set[str]:
        """The ids to keep, per ReportBatchItemFailures; anything malformed fails the whole batch."""
        if response is None or response == {}:
            return set()
        if not isinstance(response, dict) or not isinstance(response.get("batchItemFailures", []), list):
            return set(ids)
        failed = set()
        for entry in response.get("batchItemFailures", []):
            identifier = entry.get("itemIdentifier") if isinstance(entry, dict) else None
            if not identifier or identifier not in ids:
                return set(ids)
            failed.add(identifier)
        return failed
