"""SQS-triggered worker: glue between Powertools and ``citeq.worker``.

Records of one invocation are processed concurrently (``CITEQ_WORKER_CONCURRENCY`` threads), so a batch
costs about its slowest answer. Each request runs under Powertools idempotency keyed on its request id
(and retry generation); failures are reported per record (``batchItemFailures``).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.queue import Queue
from citeq.retry import RetryPolicy
from citeq.store import RequestItem, Store, dynamodb_client
from citeq.worker import Completion, Delivery, NoMetrics, RetryLater, Worker, deadline_from

if TYPE_CHECKING:
    from citeq.messages import RequestMessage

logger = Logger(service="citeq-worker")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Citeq"), service="citeq-worker")
settings = Settings.from_env()
settings.require("table", "queue_url", "api_key")
CONCURRENCY = int(os.environ.get("CITEQ_WORKER_CONCURRENCY", "10"))
MAX_RECEIVES = int(os.environ.get("CITEQ_MAX_RECEIVES", "6"))
# Powertools' cold-start metric, its flush when one metric reaches 100 values and its warning about an
# invocation without metrics ignore POWERTOOLS_METRICS_DISABLED; honour it here.
METRICS_OFF = os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true")
# A redelivery of a request that is still being answered comes back after this many seconds.
IN_PROGRESS_DELAY = 30


class _Metrics:
    """Powertools Metrics behind a lock: records are processed on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def metric(self, name: str, unit: str, value: float) -> None:
        with self._lock:
            metrics.add_metric(name=name, unit=unit, value=value)


# One DynamoDB client for the store and the idempotency records (each client costs ~70 ms to build).
dynamodb = dynamodb_client()
store = Store(settings.table or "", client=dynamodb, ttl_days=settings.result_ttl_days)
queue = Queue(settings.queue_url or "", dlq_url=settings.dlq_url)
# In-process retries only for short waits; a longer Retry-After goes back to SQS as the message's visibility.
client = AssistantClient(settings, policy=RetryPolicy(max_attempts=3, max_retry_after=5.0))
callback_queue = Queue(os.environ["CITEQ_CALLBACK_QUEUE_URL"]) if os.environ.get("CITEQ_CALLBACK_QUEUE_URL") else None


def _request_callback(item: RequestItem) -> None:
    """A finished request with a callback URL: queue its delivery (the callback function sends it)."""
    if item.callback and callback_queue is not None:
        callback_queue.send([(item.request_id, json.dumps({"request_id": item.request_id}))])


_NOT_TRIED = object()


class ResultPersistence(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB persistence layer, with the request's own writes folded in, so an answer costs
    two writes instead of four:

    - the in-progress record goes into the transaction that claims the queued request (``offer_claim``);
      if that transaction is cancelled (the request was not simply queued, or the record exists) nothing
      was written and Powertools writes the record on its own, exactly as without this class;
    - a success's COMPLETED record goes into the transaction that stores the answer (``completion``), and
      Powertools' own update then finds it written and skips it. Other outcomes complete it as usual.

    Besides the writes saved, an answer is never stored while its idempotency record says in progress."""

    def __init__(self, table_name: str, boto3_client: Any) -> None:
        super().__init__(table_name=table_name, boto3_client=boto3_client)
        # Powertools writes a record's in-progress and completed states on the thread that runs the record.
        self._local = threading.local()

    def offer_claim(self, claim: Callable[..., RequestItem | None]) -> None:
        """For the next record on this thread: ``claim(*also)`` claims the queued request in one transaction
        with the writes in ``also`` and returns it, or None when it wrote nothing."""
        self._local.claim, self._local.claimed = claim, _NOT_TRIED

    def take_claimed(self) -> RequestItem | None:
        """The claim of this thread's request: made with its in-progress record, else tried now on its own.
        None when the request was not simply queued (the caller then reads it and decides)."""
        claim: Callable[..., RequestItem | None] = self._local.claim
        claimed: RequestItem | None = claim() if self._local.claimed is _NOT_TRIED else self._local.claimed
        self._local.claim = self._local.claimed = None
        return claimed

    def _put_record(self, data_record: DataRecord) -> None:
        self._local.key, self._local.written = data_record.idempotency_key, None
        claim = getattr(self._local, "claim", None)
        if claim is not None and not self.payload_validation_enabled:
            self._local.claimed = claim(self._in_progress_put(data_record))
            if self._local.claimed is not None:
                return
        super()._put_record(data_record)

    def _in_progress_put(self, data_record: DataRecord) -> dict[str, Any]:
        """Powertools' conditional put of an in-progress record, as a TransactWriteItems entry: the key is
        new, or its record expired, or it is in progress past the in-progress expiry."""
        item = {
            **self._get_key(data_record.idempotency_key),
            self.expiry_attr: {"N": str(data_record.expiry_timestamp)},
            self.status_attr: {"S": data_record.status},
        }
        if data_record.in_progress_expiry_timestamp is not None:
            item[self.in_progress_expiry_attr] = {"N": str(data_record.in_progress_expiry_timestamp)}
        now = time.time()
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(#id) OR #expiry < :now OR "
                "(#status = :inprogress AND attribute_exists(#in_progress_expiry) AND "
                "#in_progress_expiry < :now_in_millis)",
                "ExpressionAttributeNames": {
                    "#id": self.key_attr,
                    "#expiry": self.expiry_attr,
                    "#in_progress_expiry": self.in_progress_expiry_attr,
                    "#status": self.status_attr,
                },
                "ExpressionAttributeValues": {
                    ":now": {"N": str(int(now))},
                    ":now_in_millis": {"N": str(int(now * 1000))},
                    ":inprogress": {"S": STATUS_CONSTANTS["INPROGRESS"]},
                },
            }
        }

    def completion(self, summary: dict[str, Any]) -> Completion | None:
        """The update that marks this thread's record COMPLETED with ``summary``, as Powertools would."""
        key = getattr(self._local, "key", None)
        if key is None or self.payload_validation_enabled:
            return None
        response = json.dumps(summary, cls=Encoder, sort_keys=True)
        item = {
            "Update": {
                "TableName": self.table_name,
                "Key": self._get_key(key),
                "UpdateExpression": "SET #response_data = :response_data, #expiry = :expiry, #status = :status",
                "ExpressionAttributeNames": {
                    "#response_data": self.data_attr,
                    "#expiry": self.expiry_attr,
                    "#status": self.status_attr,
                },
                "ExpressionAttributeValues": {
                    ":response_data": {"S": response},
                    ":expiry": {"N": str(self._get_expiry_timestamp())},
                    ":status": {"S": STATUS_CONSTANTS["COMPLETED"]},
                },
            }
        }

        def committed() -> None:
            self._local.written = (key, response)

        return Completion(item, committed)

    def _update_record(self, data_record: DataRecord) -> None:
        written, self._local.written = getattr(self._local, "written", None), None
        if data_record.status == STATUS_CONSTANTS["COMPLETED"] and written == (
            data_record.idempotency_key,
            data_record.response_data,
        ):
            return
        super()._update_record(data_record)


idempotency = IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=24 * 3600)
persistence = ResultPersistence(table_name=os.environ.get("CITEQ_IDEMPOTENCY_TABLE", ""), boto3_client=dynamodb)
worker = Worker(
    store,
    client,
    queue,
    max_receives=MAX_RECEIVES,
    recorder=NoMetrics() if METRICS_OFF else _Metrics(),
    on_finished=_request_callback,
    complete=persistence.completion,
)


# Powertools' decorator is untyped; the wrapped signature is unchanged.
@idempotent_function(  # type: ignore[untyped-decorator]
    data_keyword_argument="request", config=idempotency, persistence_store=persistence
)
def answer_once(
    request: dict[str, Any], message: RequestMessage, delivery: Delivery, deadline: float
) -> dict[str, Any]:
    """Answer a request unless this request (and generation) was answered before."""
    return worker.answer(message, delivery, deadline, claimed=persistence.take_claimed)


def handle_record(record: SQSRecord, deadline: float) -> dict[str, Any]:
    """One record, on a worker thread."""
    delivery = Delivery(
        record.message_id, record.body, int(record.attributes.approximate_receive_count), record.receipt_handle
    )
    message = worker.decode(delivery)
    if message is None:
        return {"message_id": delivery.message_id, "status": "malformed"}
    logger.thread_safe_append_keys(correlation_id=message.request_id, batch_id=message.batch_id)
    persistence.offer_claim(lambda *also: worker.claim(message, also=also))
    try:
        summary: dict[str, Any] = answer_once(
            request={"key": message.idempotency_key}, message=message, delivery=delivery, deadline=deadline
        )
        return summary
    except RetryLater as retry:
        worker.hand_back(delivery, retry)
        raise
    except IdempotencyAlreadyInProgressError:
        worker.hand_back(delivery, RetryLater("already being answered", IN_PROGRESS_DELAY))
        raise
    finally:
        logger.thread_safe_remove_keys(["correlation_id", "batch_id"])


def process_batch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Process an SQS batch; returns ``{"batchItemFailures": [...]}``."""
    idempotency.register_lambda_context(context)
    deadline = deadline_from(context.get_remaining_time_in_millis())
    # A processor (and thread pool) per invocation: Lambda never overlaps invocations in one container, but
    # the local poller does, and a batch processor holds one invocation's records and results.
    # Report failures per record even when every record failed (not one exception for the whole batch).
    processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="citeq-record") as executor:

        async def record_handler(record: SQSRecord) -> dict[str, Any]:
            return await asyncio.get_running_loop().run_in_executor(executor, handle_record, record, deadline)

        return dict(
            async_process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
        )


# With metrics disabled Powertools would still warn on every invocation that there are none to publish.
lambda_handler = logger.inject_lambda_context(
    process_batch if METRICS_OFF else metrics.log_metrics(capture_cold_start_metric=True)(process_batch)
)
