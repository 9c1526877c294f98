"""SQS-triggered worker: glue between Powertools and ``citeq.worker``.

Records of one invocation are processed concurrently (``CITEQ_WORKER_CONCURRENCY`` threads), so a batch
costs about its slowest answer. Exactly-once is the request item's own lease (``citeq.store``); failures are
reported per record (``batchItemFailures``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.compose import Factory
from citeq.config import Settings
from citeq.worker import HandBack, Invocation, ReceivedMessage, Recorder, Worker, invocation_from

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
logger = Logger(service="citeq-worker")


class _Metrics:
    """Powertools Metrics behind a lock: records are processed on several threads."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()

    def metric(self, name: str, unit: str, value: float) -> None:
        with self._lock:
            self._metrics.add_metric(name=name, unit=unit, value=value)


def build(settings: Settings | None = None, *, recorder: Recorder | None = None) -> Worker:
    """The worker and its collaborators (``citeq.compose.Factory.worker``), from the environment unless
    ``settings`` is given; metrics go to ``recorder`` (default: dropped)."""
    return Factory(settings).worker(recorder=recorder)


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


def handler_for(worker: Worker, concurrency: int) -> Handler:
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


def deployed(settings: Settings, worker: Worker | None = None) -> Handler:
    """The handler as deployed: ``handler_for`` over ``worker`` (default: built from ``settings``, its metrics
    published as EMF under ``POWERTOOLS_METRICS_NAMESPACE`` with the cold-start metric) and, when
    ``POWERTOOLS_METRICS_DISABLED`` is set, nothing published at all."""
    if settings.metrics_disabled:
        # Powertools' cold-start metric, its flush when one metric reaches 100 values and its warning about an
        # invocation without metrics ignore POWERTOOLS_METRICS_DISABLED: no Metrics at all then.
        return handler_for(worker or build(settings), settings.worker_concurrency)
    metrics = Metrics(namespace=settings.metrics_namespace, service="citeq-worker")
    handler = handler_for(worker or build(settings, recorder=_Metrics(metrics)), settings.worker_concurrency)
    return metrics.log_metrics(capture_cold_start_metric=True)(handler)  # type: ignore[no-any-return]


_handler: Handler | None = None


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """SQS batch in, ``{"batchItemFailures": [...]}`` out; builds the worker on the container's first
    invocation."""
    global _handler
    if _handler is None:
        _handler = deployed(Settings.from_env())
    return _handler(event, context)
