"""``citeq.intake.enqueue`` against moto in process (the ``aws`` fixture): a valid request is stored queued with
everything it came with, a repeated request id is a duplicate, and an invalid one writes nothing."""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest

from citeq.errors import ValidationError
from citeq.intake import Accepted, enqueue
from citeq.store import Store


@pytest.fixture
def store(aws: dict[str, str]) -> Store:
    return Store(aws["ResultsTable"])


def _count(aws: dict[str, str]) -> int:
    return int(boto3.client("dynamodb").scan(TableName=aws["ResultsTable"], Select="COUNT")["Count"])


def test_a_valid_request_is_stored_queued_with_what_it_came_with(store: Store, aws: dict[str, str]) -> None:
    payload = {
        "question": "How long are failed deliveries retried?",
        "custom_id": "c-1",
        "model": "gpt-4o",
        "metadata": {"ticket": 7},
        "callback_url": "http://127.0.0.1:4000/cb",
    }
    accepted = enqueue(
        payload, store=store, default_assistant="main", caller="webhook:acme", callback_allow_hosts=("127.0.0.1",)
    )
    assert not accepted.duplicate and re.fullmatch(r"r_[0-9a-f]{24}", accepted.request_id)
    item = store.get(accepted.request_id)
    assert item is not None
    assert (item.status, item.assistant, item.custom_id, item.caller) == ("queued", "main", "c-1", "webhook:acme")
    assert [m.to_dict() for m in item.chat.messages] == [
        {"role": "user", "content": "How long are failed deliveries retried?"}
    ]
    assert (item.chat.options.to_dict(), item.metadata, item.callback_url) == (
        {"model": "gpt-4o"},
        {"ticket": 7},
        "http://127.0.0.1:4000/cb",
    )
    # Stored, not sent: the table's stream owes the message (nothing is on the queue yet).
    sqs = boto3.client("sqs")
    assert "Messages" not in sqs.receive_message(QueueUrl=aws["RequestsQueue"], WaitTimeSeconds=0)


def test_custom_id_is_optional_and_stays_unset(store: Store) -> None:
    accepted = enqueue({"messages": [{"role": "user", "content": "q"}]}, store=store, default_assistant="main")
    item = store.get(accepted.request_id)
    assert item is not None and item.custom_id is None


def test_a_request_id_given_twice_is_a_duplicate_and_the_first_request_stands(
    store: Store, aws: dict[str, str]
) -> None:
    first = enqueue({"question": "first"}, store=store, default_assistant="main", request_id="r-fixed")
    again = enqueue({"question": "second"}, store=store, default_assistant="main", request_id="r-fixed")
    assert (first, again) == (Accepted("r-fixed"), Accepted("r-fixed", duplicate=True))
    item = store.get("r-fixed")
    assert item is not None and item.question == "first"
    assert _count(aws) == 1


@pytest.mark.parametrize(
    ("payload", "options", "why"),
    [
        (["q"], {}, "must be a JSON object"),
        ({"question": "q", "colour": "red"}, {}, "unknown field"),
        ({"question": "q"}, {"default_assistant": None}, "no assistant"),
        ({"question": "q"}, {"require_callback": True}, "callback_url is required"),
        ({"question": "q", "callback_url": "http://10.0.0.5/cb"}, {}, "non-public address"),
        ({"question": "q", "temperature": 3}, {}, "temperature"),
    ],
    ids=["not-an-object", "unknown-field", "no-assistant", "callback-required", "internal-callback", "temperature"],
)
def test_an_invalid_request_is_refused_with_its_reason_and_writes_nothing(
    store: Store, aws: dict[str, str], payload: Any, options: dict[str, Any], why: str
) -> None:
    arguments: dict[str, Any] = {"default_assistant": "main", **options}
    with pytest.raises(ValidationError, match=why):
        enqueue(payload, store=store, **arguments)
    assert _count(aws) == 0
