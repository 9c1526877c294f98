"""Scheduled reconciler, two schedules in one function:

- every minute: fails the requests whose messages were dead-lettered, with the reason. The messages stay in
  the DLQ, so ``citeq dlq show`` lists them and ``citeq dlq redrive`` brings them back;
- every 10 minutes (the event's input ``{"sweep": true}``): the sweep (``citeq.sweep``), which sends a new
  message to each request stranded without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq import dlq, sweep
from citeq.compose import Factory
from citeq.config import Settings
from citeq.queue import Queue
from citeq.store import Store

logger = Logger(service="citeq-reconciler")


def handler_for(
    store: Store, queue: Queue, max_receives: int, stranded_after: float = sweep.STRANDED_AFTER
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """A Lambda handler reconciling ``queue``'s DLQ with ``store``, or sweeping for stranded requests when the
    event says ``"sweep": true``."""

    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        if isinstance(event, dict) and event.get("sweep") is True:
            swept = sweep.sweep(
                store=store,
                queue=queue,
                max_receives=max_receives,
                stranded_after=stranded_after,
                time_left=lambda: context.get_remaining_time_in_millis() / 1000,
            )
            return {"swept": swept.to_dict()}
        ended = dlq.reconcile(store=store, queue=queue, max_receives=max_receives)
        if ended:
            logger.warning("dead-lettered requests failed", extra={"count": ended})
        return {"reconciled": ended}

    return handle


def build(settings: Settings | None = None) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The handler over the results table and the requests queue's DLQ, from the environment unless ``settings``
    is given."""
    factory = Factory(settings)
    factory.settings.require("table", "queue_url", "dlq_url")
    settings = factory.settings
    return handler_for(factory.store(), factory.queue(), settings.max_receives, settings.stranded_after_seconds)


_handler: Callable[[dict[str, Any], LambdaContext], dict[str, Any]] | None = None


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A scheduled event in; ``{"reconciled": n}`` out, or ``{"swept": {...}}`` for a sweep (``Swept.to_dict``)."""
    global _handler
    if _handler is None:
        _handler = build()
    return _handler(event, context)
