"""The local SQS poller's partial-batch-failure handling, against moto's SQS in process: the records a handler
names in ``batchItemFailures`` come back; the others are deleted; a failure it cannot read keeps the batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.poller import Poller


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    url = str(sqs.create_queue(QueueName="requests")["QueueUrl"])
    for body in ("first", "second", "third"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    return url


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every visible message, left visible again at once (a zero visibility timeout), so a message the poller
    does not delete can be received again without waiting."""
    return list(
        sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
    )


def _poller(sqs: Any, url: str, handler: Any) -> Poller:
    return Poller(sqs, url, "arn:aws:sqs:us-east-1:123456789012:requests", handler, timeout=30.0)


def test_a_record_in_batch_item_failures_comes_back_and_the_others_are_deleted(sqs: Any, queue_url: str) -> None:
    messages = _receive(sqs, queue_url)
    by_body = {m["Body"]: m["MessageId"] for m in messages}
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"batchItemFailures": [{"itemIdentifier": by_body["second"]}]}

    poller = _poller(sqs, queue_url, handler)
    assert poller.invoke(messages) == {by_body["second"]}
    assert sorted(r["body"] for r in seen[0]["Records"]) == ["first", "second", "third"]
    again = _receive(sqs, queue_url)
    assert [m["Body"] for m in again] == ["second"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert (poller.stats.deleted, poller.stats.failed_records, poller.stats.errors) == (2, 1, 0)


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}], ids=["none", "empty", "no-failures"])
def test_a_response_without_failures_deletes_the_whole_batch(sqs: Any, queue_url: str, response: Any) -> None:
    poller = _poller(sqs, queue_url, lambda event, context: response)
    assert poller.invoke(_receive(sqs, queue_url)) == set()
    assert _receive(sqs, queue_url) == []
    assert poller.stats.deleted == 3


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": "not-a-message-of-this-batch"}]},
        {"batchItemFailures": [{"id": "wrong key"}]},
        {"batchItemFailures": "all"},
        ["not", "a", "dict"],
    ],
    ids=["unknown-id", "no-identifier", "not-a-list", "not-a-dict"],
)
def test_failures_that_cannot_be_read_keep_the_whole_batch(sqs: Any, queue_url: str, response: Any) -> None:
    messages = _receive(sqs, queue_url)
    poller = _poller(sqs, queue_url, lambda event, context: response)
    assert poller.invoke(messages) == {m["MessageId"] for m in messages}
    assert sorted(m["Body"] for m in _receive(sqs, queue_url)) == ["first", "second", "third"]
    assert poller.stats.deleted == 0


def test_a_handler_that_raises_keeps_the_whole_batch(sqs: Any, queue_url: str) -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("the function crashed")

    poller = _poller(sqs, queue_url, handler)
    messages = _receive(sqs, queue_url)
    assert poller.invoke(messages) == {m["MessageId"] for m in messages}
    assert len(_receive(sqs, queue_url)) == 3
    assert (poller.stats.errors, poller.stats.failed_records) == (1, 3)
