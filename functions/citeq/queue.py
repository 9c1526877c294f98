"""SQS: sending requests (SendMessageBatch, 10 a call, calls in parallel, partial failures retried),
changing a message's visibility for a retry delay, and reading / redriving the DLQ."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from citeq import aws
from citeq.errors import ConfigurationError, QueueError

# ChangeMessageVisibility accepts at most 12 hours.
MAX_VISIBILITY = 43_200
SEND_ATTEMPTS = 6
# SendMessage's DelaySeconds accepts at most 15 minutes.
MAX_DELAY = 900
# (id, body) or (id, body, delay seconds)
Outgoing = tuple[str, str] | tuple[str, str, int]


@dataclass(frozen=True)
class DeadLetter:
    """A message in the DLQ."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int
    sent_at: float


class Queue:
    """Owns every SQS call; ``ClientError`` never leaves this class."""

    def __init__(
        self,
        url: str,
        *,
        dlq_url: str | None = None,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        workers: int = 8,
    ) -> None:
        self.url = url
        self.dlq_url = dlq_url
        self._client = client
        self.sleep = sleep
        self.workers = workers

    @property
    def client(self) -> Any:
        """The SQS client, made on first use."""
        if self._client is None:
            self._client = aws.client("sqs")
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        return aws.call(self.client, "sqs", operation, **kwargs)

    def send(self, messages: Sequence[Outgoing], *, url: str | None = None) -> None:
        """Send ``(id, body)`` or ``(id, body, delay_seconds)`` tuples (SendMessageBatch, 10 a call, in parallel).
        Raises QueueError naming the ids of messages that never went."""
        failed = self.try_send(messages, url=url)
        if failed:
            raise QueueError(f"SQS did not accept {len(failed)} messages after {SEND_ATTEMPTS} tries: {failed[:5]}")

    def try_send(self, messages: Sequence[Outgoing], *, url: str | None = None) -> list[str]:
        """Like ``send``, but returns ``"id: reason"`` for each message that never went instead of raising."""
        target = url or self.url
        chunks = [list(messages[i : i + 10]) for i in range(0, len(messages), 10)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return [entry for result in pool.map(lambda c: self._send_chunk(target, c), chunks) for entry in result]

    def _send_chunk(self, url: str, chunk: list[Outgoing]) -> list[str]:
        """Send up to 10 messages, retrying the entries SQS did not take; returns ``"id: reason"`` of losses."""
        pending = {f"m{index}": message for index, message in enumerate(chunk)}
        rejected: list[str] = []
        reason = ""
        for attempt in range(SEND_ATTEMPTS):
            entries = [
                {"Id": entry_id, "MessageBody": message[1], "DelaySeconds": min(MAX_DELAY, max(0, int(message[2])))}
                if len(message) == 3
                else {"Id": entry_id, "MessageBody": message[1]}
                for entry_id, message in pending.items()
            ]
            try:
                result = self._call("send_message_batch", QueueUrl=url, Entries=entries)
            except QueueError as exc:
                reason = str(exc)
            else:
                for ok in result.get("Successful", []):
                    pending.pop(ok["Id"], None)
                for failure in result.get("Failed", []):
                    if failure.get("SenderFault"):  # a malformed entry: retrying will not help
                        rejected.append(f"{pending.pop(failure['Id'])[0]}: {failure.get('Code', '')}")
                    else:
                        reason = failure.get("Code", "")
            if not pending:
                break
            self.sleep(min(5.0, 0.1 * 2**attempt))
        return rejected + [f"{message[0]}: {reason}" for message in pending.values()]

    def delay(self, receipt_handle: str, seconds: float) -> None:
        """Make a received message visible again after ``seconds`` (how a retry honours Retry-After)."""
        self._call(
            "change_message_visibility",
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(MAX_VISIBILITY, round(seconds))),
        )

    def depth(self, url: str | None = None) -> dict[str, int]:
        """Approximate visible, in-flight and delayed counts."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self._call("get_queue_attributes", QueueUrl=url or self.url, AttributeNames=names)["Attributes"]
        return {
            "visible": int(attrs.get(names[0], 0)),
            "in_flight": int(attrs.get(names[1], 0)),
            "delayed": int(attrs.get(names[2], 0)),
        }

    def _require_dlq(self) -> str:
        if not self.dlq_url:
            raise ConfigurationError("no DLQ configured (CITEQ_DLQ_URL)")
        return self.dlq_url

    def dead_letters(self, limit: int = 100, hold_seconds: int = 30) -> list[DeadLetter]:
        """Up to ``limit`` DLQ messages, held invisible for ``hold_seconds`` (so one listing sees each once)."""
        url = self._require_dlq()
        found: dict[str, DeadLetter] = {}
        while len(found) < limit:
            result = self._call(
                "receive_message",
                QueueUrl=url,
                MaxNumberOfMessages=min(10, limit - len(found)),
                VisibilityTimeout=hold_seconds,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
            messages = result.get("Messages", [])
            # Nothing new: the queue is drained, or (a hold of 0) it hands out the same messages again.
            if not any(message["MessageId"] not in found for message in messages):
                break
            for message in messages:
                attrs = message.get("Attributes", {})
                found[message["MessageId"]] = DeadLetter(
                    message["MessageId"],
                    message["Body"],
                    message["ReceiptHandle"],
                    int(attrs.get("ApproximateReceiveCount", 0)),
                    int(attrs.get("SentTimestamp", 0)) / 1000,
                )
        return list(found.values())

    def release(self, letters: Sequence[DeadLetter]) -> None:
        """Make listed DLQ messages visible again at once."""
        url = self._require_dlq()
        for letter in letters:
            self._call(
                "change_message_visibility", QueueUrl=url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0
            )

    def redrive(self, letters: Sequence[DeadLetter]) -> None:
        """Move DLQ messages back to the main queue (sent first, then deleted: never lost)."""
        self.send([(letter.message_id, letter.body) for letter in letters])
        self.delete_letters(letters)

    def delete_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Delete DLQ messages whose work is owed elsewhere now."""
        url = self._require_dlq()
        for letter in letters:
            self._call("delete_message", QueueUrl=url, ReceiptHandle=letter.receipt_handle)
