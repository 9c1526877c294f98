"""SQS-triggered worker: glue between Powertools and ``citeq.worker``.

Records of one invocation are processed concurrently (``CITEQ_WORKER_CONCURRENCY`` threads), so a batch
costs about its slowest answer. Exactly-once is the request item's own lease (``citeq.store``); failures are
reported per record (``batchItemFailures``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.pacing import Pacer, Unpaced
from citeq.queue import Queue
from citeq.retry import RetryPolicy
from citeq.store import Store, dynamodb_client
from citeq.worker import HandBack, Invocation, NoMetrics, ReceivedMessage, Recorder, Worker, invocation_from

logger = Logger(service="citeq-worker")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Citeq"), service="citeq-worker")
# Powertools' cold-start metric, its flush when one metric reaches 100 values and its warning about an
# invocation without metrics ignore POWERTOOLS_METRICS_DISABLED; honour it here.
METRICS_OFF = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true")


class _Metrics:
    """Powertools Metrics behind a lock: records are processed on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def metric(self, name: str, unit: str, value: float) -> None:
        with self._lock:
            metrics.add_metric(name=name, unit=unit, value=value)


def build(settings: Settings | None = None, *, recorder: Recorder | None = None) -> Worker:
    """The worker and its collaborators, from the environment (once per container)."""
    settings = settings or Settings.from_env()
    settings.require("table", "queue_url", "api_key")
    store = Store(settings.table or "", client=dynamodb_client(), ttl_days=settings.result_ttl_days)
    # In-process retries only for short waits and never for 429s: a rate-limited request is put off through
    # the pacer (without spending a delivery), a longer Retry-After goes back to SQS as a delay.
    policy = RetryPolicy(max_attempts=3, max_retry_after=5.0, retry_rate_limits=False)
    pacer: Pacer = Unpaced()
    if settings.tokens_per_minute:
        from citeq.budget import TokenBudget

        pacer = TokenBudget(
            store,
            settings.tokens_per_minute,
            window=settings.token_window_seconds,
            pause=settings.quota_probe_seconds,
        )
    return Worker(
        store,
        AssistantClient(settings, policy=policy),
        Queue(settings.queue_url or "", dlq_url=settings.dlq_url),
        max_receives=settings.max_receives,
        pacer=pacer,
        recorder=recorder or (NoMetrics() if METRICS_OFF else _Metrics()),
    )


def handle_record(worker: Worker, record: SQSRecord, invocation: Invocation) -> dict[str, Any]:
    """One record, on a worker thread."""
    delivery = ReceivedMessage(
        record.message_id, record.body, int(record.attributes.approximate_receive_count), record.receipt_handle
    )
    message = worker.decode(delivery)
    if message is None:
        return {"message_id": delivery.message_id, "status": "malformed"}
    logger.thread_safe_append_keys(correlation_id=message.request_id, batch_id=message.batch_id)
    try:
        return worker.process(message, delivery, invocation)
    except HandBack as hand_back:
        worker.hand_back(delivery, hand_back)
        raise
    finally:
        logger.thread_safe_remove_keys(["correlation_id", "batch_id"])


def handler_for(worker: Worker, concurrency: int) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """A Lambda handler over ``worker``: an SQS batch in, ``{"batchItemFailures": [...]}`` out."""

    def process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        invocation = invocation_from(context.get_remaining_time_in_millis())
        # A processor (and thread pool) per invocation: Lambda never overlaps invocations in one container,
        # but the local poller does, and a batch processor holds one invocation's records and results.
        # Report failures per record even when every record failed (not one exception for the whole batch).
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="citeq-record") as executor:

            async def record_handler(record: SQSRecord) -> dict[str, Any]:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(executor, handle_record, worker, record, invocation)

            return dict(
                async_process_partial_response(
                    event=event, record_handler=record_handler, processor=processor, context=context
                )
            )

    return process_batch


_handler: Callable[[dict[str, Any], LambdaContext], dict[str, Any]] | None = None


def process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The deployed handler's body: builds the worker on the first invocation of the container."""
    global _handler
    if _handler is None:
        settings = Settings.from_env()
        _handler = handler_for(build(settings), settings.worker_concurrency)
    return _handler(event, context)


# With metrics disabled Powertools would still warn on every invocation that there are none to publish.
lambda_handler = logger.inject_lambda_context(
    process_batch if METRICS_OFF else metrics.log_metrics(capture_cold_start_metric=True)(process_batch)
)
