"""Stream-triggered dispatcher: sends the SQS messages and callback jobs that stored states owe.

Triggered by the results table's DynamoDB stream (NEW_AND_OLD_IMAGES) with ReportBatchItemFailures: the
response names the first record whose send failed, so Lambda retries from there and never skips one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq.compose import Factory
from citeq.config import Settings
from citeq.dispatch import Dispatcher

logger = Logger(service="citeq-dispatcher")


def build(settings: Settings | None = None) -> Dispatcher:
    """The dispatcher over the requests queue and (when configured) the callback queue, from the environment
    unless ``settings`` is given."""
    return Factory(settings).dispatcher()


def handler_for(dispatcher: Dispatcher) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """A Lambda handler over ``dispatcher``: a stream batch in, the partial batch response out."""

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        records = event.get("Records") or []
        response = dispatcher.dispatch(records)
        logger.debug("dispatched", extra={"records": len(records), "failures": response["batchItemFailures"]})
        return response

    return handle


_handler: Callable[[dict[str, Any], LambdaContext], dict[str, Any]] | None = None


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """DynamoDB Streams event in, ``{"batchItemFailures": [...]}`` out."""
    global _handler
    if _handler is None:
        _handler = handler_for(build())
    return _handler(event, context)
