"""Callback deliveries (SQS-triggered): POST each finished request's result to its callback URL, signed.

A failed delivery is handed back with its visibility set to the next delay of the schedule; the delivery
attempt number is the message's receive count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.callbacks import CallbackDeliverer
from citeq.compose import Factory
from citeq.config import Settings
from citeq.errors import ConfigurationError
from citeq.queue import Queue
from citeq.store import Store

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
logger = Logger(service="citeq-callback")
# Seconds kept back from the invocation's timeout to record the last attempts and answer Lambda.
MARGIN_SECONDS = 3.0


class DeliverLater(Exception):
    """The receiver did not take it; the message comes back after the schedule's delay."""


class Callbacks:
    """The function's collaborators: the deliverer (which records each attempt in its store) and the callback
    queue (where an undelivered job is handed back)."""

    def __init__(self, deliverer: CallbackDeliverer, queue: Queue) -> None:
        self.deliverer = deliverer
        self.queue = queue

    @property
    def store(self) -> Store:
        """The store deliveries are read from and recorded in."""
        return self.deliverer.store

    def handle(self, record: SQSRecord, deadline: float | None = None) -> dict[str, Any]:
        """Deliver one callback, within ``deadline`` (a time.monotonic instant) when given; DeliverLater when
        the receiver did not take it (the message's visibility is already set to the schedule's delay)."""
        request_id = str(json.loads(record.body)["request_id"])
        attempt = int(record.attributes.approximate_receive_count)
        outcome = self.deliverer.deliver(request_id, attempt, deadline=deadline)
        logger.info(
            "callback attempt",
            extra={"request_id": request_id, "attempt": attempt, "status": outcome.status, "error": outcome.error},
        )
        if outcome.retry_in is not None:
            self.queue.delay(record.receipt_handle, outcome.retry_in)
            raise DeliverLater(outcome.error or "not delivered")
        return {"request_id": request_id, "delivered": outcome.delivered}

    def delivered(self, record: SQSRecord, deadline: float) -> bool:
        """Whether ``record`` is done with (delivered, or given up on by the schedule)."""
        try:
            self.handle(record, deadline)
            return True
        except DeliverLater:
            return False
        except Exception:
            # One bad record (or receiver) is that record's failure, never its batch's (issue 11).
            logger.exception("callback record failed", extra={"message_id": record.message_id})
            return False


def build(
    settings: Settings | None = None, *, deliverer: CallbackDeliverer | None = None, queue: Queue | None = None
) -> Callbacks:
    """The deliverer and callback queue, from the environment unless ``settings`` is given (tests pass their own
    ``deliverer`` or ``queue``). ConfigurationError naming the variable when the table, the callback secret or
    the callback queue is not configured."""
    factory = Factory(settings)
    settings = factory.settings
    settings.require("table", "callback_secret", "callback_queue_url")

    def signing_secret() -> str:
        # Looked up per delivery (Powertools caches a Secrets Manager secret for 5 minutes) and checked; an
        # unusable one is logged at ERROR naming the setting, and the attempt is recorded as failed.
        try:
            return settings.resolve_callback_secret().get()
        except ConfigurationError as exc:
            logger.error("callback secret unusable: %s", exc)
            raise

    return Callbacks(deliverer or factory.deliverer(signing_secret), queue or factory.callback_queue())


def handler_for(callbacks: Callbacks) -> Handler:
    """A Lambda handler over ``callbacks``: an SQS batch in, ``{"batchItemFailures": [...]}`` out."""

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        records = [SQSRecord(r) for r in event.get("Records", [])]
        if not records:
            return {"batchItemFailures": []}
        # Concurrent, so a slow receiver costs its own deadline, not the whole batch's time; and every deadline
        # ends before the invocation's, so no record is lost to a timeout of the function.
        deadline = time.monotonic() + max(0.0, context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS)
        with ThreadPoolExecutor(max_workers=len(records)) as pool:
            done = list(pool.map(lambda r: callbacks.delivered(r, deadline), records))
        failed = [record.message_id for record, ok in zip(records, done, strict=True) if not ok]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    return handle


_handler: Handler | None = None


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Deliver a batch of callbacks concurrently, each within its deadline; failures are reported per record.
    Builds its collaborators on the container's first invocation."""
    global _handler
    if _handler is None:
        _handler = handler_for(build())
    return _handler(event, context)
