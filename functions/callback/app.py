"""Callback deliveries (SQS-triggered): POST each finished request's result to its callback URL, signed.

A failed delivery is handed back with its visibility set to the next delay of the schedule; the delivery
attempt number is the message's receive count.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.callbacks import Deliverer
from citeq.config import Settings
from citeq.queue import Queue
from citeq.store import Store

logger = Logger(service="citeq-callback")
settings = Settings.from_env()
settings.require("table", "callback_secret")
store = Store(settings.table or "", ttl_days=settings.result_ttl_days)
queue = Queue(os.environ.get("CITEQ_CALLBACK_QUEUE_URL", ""))
# The signing secret is looked up per delivery (Powertools caches a Secrets Manager secret for 5 minutes).
deliverer = Deliverer(
    store, lambda: settings.resolve_callback_secret().get(), allow_hosts=settings.callback_allow_hosts
)


class DeliverLater(Exception):
    """The receiver did not take it; the message comes back after the schedule's delay."""


def handle(record: SQSRecord) -> dict[str, Any]:
    """Deliver one callback."""
    request_id = json.loads(record.body)["request_id"]
    attempt = int(record.attributes.approximate_receive_count)
    outcome = deliverer.deliver(request_id, attempt)
    logger.info(
        "callback attempt",
        extra={"request_id": request_id, "attempt": attempt, "status": outcome.status, "error": outcome.error},
    )
    if outcome.retry_in is not None:
        queue.delay(record.receipt_handle, outcome.retry_in)
        raise DeliverLater(outcome.error or "not delivered")
    return {"request_id": request_id, "delivered": outcome.delivered}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process a batch of callback messages; failures are reported per record."""
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event=event, record_handler=handle, processor=processor, context=context))
