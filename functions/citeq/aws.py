"""boto3 clients as citeq uses them, and the one place their errors become citeq's: StoreError for DynamoDB,
QueueError for SQS (both AWSError)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from citeq.errors import AWSError, QueueError, StoreError

# Standard retries; a pool large enough for the worker's concurrent records.
CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
SERVICE_NAMES = {"dynamodb": "DynamoDB", "sqs": "SQS"}
ERRORS: dict[str, type[AWSError]] = {"dynamodb": StoreError, "sqs": QueueError}


def client(service: str) -> Any:
    """A client for ``service`` (building one costs tens of milliseconds: make it once per process)."""
    return boto3.client(service, config=CONFIG)  # type: ignore[call-overload]


def translate(service: str, operation: str, exc: ClientError | BotoCoreError) -> AWSError:
    """The service's error for an AWS error: StoreError (DynamoDB), QueueError (SQS), else AWSError; its code
    kept, never its message, which may echo request data."""
    name = SERVICE_NAMES.get(service, service)
    error = ERRORS.get(service, AWSError)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return error(f"{name} {operation} failed: {code}", code=code)
    return error(f"{name} {operation} failed: {type(exc).__name__}", code=type(exc).__name__)


def call(api: Any, service: str, operation: str, **kwargs: Any) -> Any:
    """``api.<operation>(**kwargs)`` with AWS errors turned into ``translate``'s (the AWS error code kept)."""
    try:
        return getattr(api, operation)(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise translate(service, operation, exc) from exc


def conditional(api: Any, service: str, operation: str, **kwargs: Any) -> bool:
    """A conditional write: True when it was made, False when its condition failed (nothing written); any
    other AWS error becomes ``translate``'s."""
    try:
        getattr(api, operation)(**kwargs)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise translate(service, operation, exc) from exc
    except BotoCoreError as exc:
        raise translate(service, operation, exc) from exc
