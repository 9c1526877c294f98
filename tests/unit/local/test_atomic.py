"""``infra.local.atomic``: moto's DynamoDB made atomic as DynamoDB is, checked through boto3 against moto in
process: transactions are all or nothing (conditions first, writes rolled back), and concurrent updates of one
item lose nothing."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.local.atomic import make_dynamodb_atomic

TABLE = "t"


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    make_dynamodb_atomic()
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def _get(dynamodb: Any, pk: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}).get("Item")
    return item


def _put(pk: str, **extra: Any) -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {"pk": {"S": pk}, **extra}}}


def _add(pk: str, attribute: str = "n") -> dict[str, Any]:
    return {
        "Update": {
            "TableName": TABLE,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": "ADD #a :one",
            "ExpressionAttributeNames": {"#a": attribute},
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def test_make_dynamodb_atomic_patches_once() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    from infra.local import atomic

    make_dynamodb_atomic()
    assert inspect.unwrap(DynamoDBBackend.transact_write_items) is atomic.transact_write_items
    patched = DynamoDBBackend.update_item
    make_dynamodb_atomic()
    assert DynamoDBBackend.update_item is patched  # a second call does not wrap the wrappers again


def test_a_transaction_applies_every_write(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "counter"}, "n": {"N": "1"}})
    dynamodb.transact_write_items(
        TransactItems=[
            _put("new", v={"S": "x"}),
            _add("counter"),
            {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "gone"}}}},
        ]
    )
    assert _get(dynamodb, "new") == {"pk": {"S": "new"}, "v": {"S": "x"}}
    assert _get(dynamodb, "counter") == {"pk": {"S": "counter"}, "n": {"N": "2"}}


def test_a_failed_condition_cancels_the_transaction_before_any_write(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "taken"}, "owner": {"S": "a"}})
    guarded = _put("taken", owner={"S": "b"})
    guarded["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
    guarded["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[_put("first"), guarded])
    error = raised.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in error["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert error["CancellationReasons"][1]["Item"] == {"pk": {"S": "taken"}, "owner": {"S": "a"}}
    assert _get(dynamodb, "first") is None
    assert _get(dynamodb, "taken") == {"pk": {"S": "taken"}, "owner": {"S": "a"}}


def test_a_write_that_fails_after_others_were_made_rolls_them_back(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "before"}, "v": {"S": "old"}})
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "text"}, "n": {"S": "not a number"}})
    # No condition fails, so the writes start; ADD to a string attribute then fails on the third.
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[_put("created"), _put("before", v={"S": "new"}), _add("text")]
        )
    assert _get(dynamodb, "created") is None
    assert _get(dynamodb, "before") == {"pk": {"S": "before"}, "v": {"S": "old"}}
    assert _get(dynamodb, "text") == {"pk": {"S": "text"}, "n": {"S": "not a number"}}


@pytest.mark.parametrize(
    "items", [[_put("same"), _add("same")], [_put(f"k{i}") for i in range(101)]], ids=["one-item-twice", "over-100"]
)
def test_transactions_dynamodb_refuses_are_refused_and_write_nothing(
    dynamodb: Any, items: list[dict[str, Any]]
) -> None:
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert dynamodb.scan(TableName=TABLE)["Count"] == 0


def test_concurrent_updates_of_one_item_lose_nothing(dynamodb: Any) -> None:
    def bump(_: int) -> None:
        for _ in range(25):
            dynamodb.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "c"}},
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            dynamodb.transact_write_items(TransactItems=[_add("c", "t")])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(bump, range(8)))
    assert _get(dynamodb, "c") == {"pk": {"S": "c"}, "n": {"N": "200"}, "t": {"N": "200"}}
