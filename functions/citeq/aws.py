"""boto3 clients as citeq uses them, and the one place their errors become citeq's StoreError."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from citeq.errors import StoreError

# Standard retries; a pool large enough for the worker's concurrent records.
CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
SERVICE_NAMES = {"dynamodb": "DynamoDB", "sqs": "SQS"}


def client(service: str) -> Any:
    """A client for ``service`` (building one costs tens of milliseconds: make it once per process)."""
    return boto3.client(service, config=CONFIG)  # type: ignore[call-overload]


def call(api: Any, service: str, operation: str, **kwargs: Any) -> Any:
    """``api.<operation>(**kwargs)`` with AWS errors turned into StoreError (the AWS error code kept)."""
    name = SERVICE_NAMES.get(service, service)
    try:
        return getattr(api, operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StoreError(f"{name} {operation} failed: {code}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"{name} {operation} failed: {type(exc).__name__}") from exc
