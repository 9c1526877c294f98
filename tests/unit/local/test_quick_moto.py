"""The local stack's shortcuts through moto give moto's own results.

``quick_update`` applies plain update expressions without moto's expression machinery, and ``quick_sqs``
counts a queue's messages in one pass: each is checked here against moto's own implementation, on the
same inputs (differential tests), including the inputs moto must reject.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.quick_update import plan, quick_update_item

# --------------------------------------------------------------------------- quick_update


@pytest.mark.parametrize(
    "expression",
    [
        "SET #st = :to, updated_at = :now",
        "set #a = :v REMOVE #r0 add #i0 :one",
        "ADD #from :minus, #to :plus",
        "REMOVE a, b",
    ],
)
def test_plain_expressions_take_the_short_path(expression: str) -> None:
    assert plan(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "SET deliveries = list_append(if_not_exists(deliveries, :empty), :d)",
        "SET a = :x + :y",
        "SET a.b = :v",
        "SET a[0] = :v",
        "SET a = b",
        "SET a = :v SET b = :w",
        "DELETE s :v",
        "",
        "#a = :v",
    ],
)
def test_anything_else_goes_to_moto(expression: str) -> None:
    assert plan(expression) is None


def _backend() -> Any:
    from moto.dynamodb.models import DynamoDBBackend

    backend = DynamoDBBackend("us-east-1", "123456789012")
    for name in ("quick", "moto"):
        backend.create_table(
            name,
            schema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            attr=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gsi1pk", "AttributeType": "S"},
            ],
            throughput=None,
            billing_mode="PAY_PER_REQUEST",
            indexes=None,
            global_indexes=[
                {
                    "IndexName": "gsi1",
                    "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            streams=None,
            sse_specification=None,
            tags=[],
            deletion_protection_enabled=None,
            warm_throughput=None,
        )
    return backend


def _moto_update_item() -> Any:
    from moto.dynamodb.models import DynamoDBBackend

    # The local stack may have wrapped it (lock, short path): unwrap to moto's own function.
    return inspect.unwrap(DynamoDBBackend.update_item)


NUMBERS = st.one_of(
    st.builds(lambda n: {"N": str(n)}, st.integers(-50, 50)),
    st.builds(lambda n: {"N": f"{n:.2f}"}, st.floats(-5, 5, allow_nan=False)),
)
VALUES = st.one_of(
    NUMBERS,
    st.builds(lambda s: {"S": s}, st.text(max_size=5)),
    st.builds(lambda b: {"BOOL": b}, st.booleans()),
    st.just({"NULL": True}),
    st.builds(lambda s: {"M": {"k": {"S": s}}}, st.text(max_size=3)),
    st.builds(lambda n: {"L": [{"N": str(n)}]}, st.integers(0, 9)),
)
SETS = st.just({"SS": ["a", "b"]})
PLAIN_NAMES = ["a", "b", "attempts", "updated_at", "c_queued"]
# Reserved words used bare, and key attributes of the table and of its index: moto's to reject.
AWKWARD_NAMES = ["count", "status", "pk", "gsi1pk"]
EXISTING = st.dictionaries(st.sampled_from(["a", "b", "attempts", "c_queued", "status"]), VALUES, max_size=4)


@st.composite
def updates(draw: st.DrawFn) -> list[tuple[str, str, bool, dict[str, Any]]]:
    """Mostly plain updates (the short path), some with one awkward part (moto's path)."""
    count = draw(st.integers(1, 5))
    names = draw(st.lists(st.sampled_from(PLAIN_NAMES), min_size=count, max_size=count, unique=True))
    actions = []
    for name in names:
        clause = draw(st.sampled_from(["SET", "REMOVE", "ADD"]))
        value = draw(NUMBERS if clause == "ADD" else VALUES)
        actions.append((clause, name, draw(st.booleans()), value))
    awkward = draw(st.sampled_from(["none", "none", "none", "name", "twice", "set value"]))
    if awkward == "name":
        actions.append(("SET", draw(st.sampled_from(AWKWARD_NAMES)), False, draw(VALUES)))
    elif awkward == "twice":
        actions.append(("SET", names[0], True, draw(VALUES)))
    elif awkward == "set value":
        actions.append(("ADD", "tags", True, draw(SETS)))
    return actions


def _expression(actions: list[tuple[str, str, bool, dict[str, Any]]]) -> tuple[str, dict[str, str], dict[str, Any]]:
    clauses: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for index, (clause, name, placeholder, value) in enumerate(actions):
        path = name
        if placeholder:
            path = f"#n{index}"
            names[path] = name
        values[f":v{index}"] = value
        piece = {"SET": f"{path} = :v{index}", "ADD": f"{path} :v{index}", "REMOVE": path}[clause]
        if clause == "REMOVE":
            del values[f":v{index}"]
        clauses.setdefault(clause, []).append(piece)
    return " ".join(f"{c} {', '.join(p)}" for c, p in clauses.items()), names, values


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        item = call()
    except Exception as exc:  # the comparison is of what moto raises
        return "error", type(exc).__name__
    return "item", item.to_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=updates(), existing=st.one_of(st.none(), EXISTING), condition=st.sampled_from([None, "exists", "status"])
)
def test_short_path_gives_moto_s_own_result(
    actions: list[tuple[str, str, bool, dict[str, Any]]], existing: dict[str, Any] | None, condition: str | None
) -> None:
    backend = _backend()
    moto = _moto_update_item()
    quick = quick_update_item(moto)
    expression, names, values = _expression(actions)
    key = {"pk": {"S": "p"}, "sk": {"S": "s"}}
    condition_expression = None
    if condition == "exists":
        condition_expression = "attribute_exists(pk)"
    elif condition == "status":
        condition_expression = "#cst = :cst"
        names = {**names, "#cst": "status"}
        values = {**values, ":cst": {"S": "queued"}}
    outcomes = []
    for table, update in (("quick", quick), ("moto", moto)):
        if existing is not None:
            backend.put_item(table, {**key, **existing})
        outcomes.append(
            _outcome(
                lambda table=table, update=update: update(
                    backend, table, key, expression, names or None, values or None, None, None, condition_expression
                )
            )
        )
    assert outcomes[0] == outcomes[1], expression
    quick_item = backend.get_item("quick", key)
    moto_item = backend.get_item("moto", key)
    assert (quick_item.to_json() if quick_item else None) == (moto_item.to_json() if moto_item else None)


@pytest.mark.parametrize("exists", [True, False])
def test_a_plain_update_past_the_item_size_limit_is_rejected_as_moto_rejects_it(exists: bool) -> None:
    from moto.dynamodb.exceptions import ItemSizeToUpdateTooLarge

    backend = _backend()
    moto = _moto_update_item()
    key = {"pk": {"S": "p"}, "sk": {"S": "s"}}
    values = {":big": {"S": "y" * 200_000}, ":more": {"S": "z" * 300_000}}
    for table, update in (("quick", quick_update_item(moto)), ("moto", moto)):
        if exists:
            backend.put_item(table, {**key, "a": {"S": "x" * 300_000}})
        with pytest.raises(ItemSizeToUpdateTooLarge):
            update(backend, table, key, "SET b = :big, c = :more", None, values, None, None, None)
    quick_item, moto_item = backend.get_item("quick", key), backend.get_item("moto", key)
    assert quick_item is not None and moto_item is not None
    assert quick_item.to_json() == moto_item.to_json()
    assert "c" not in quick_item.attrs


# --------------------------------------------------------------------------- quick_sqs


def test_queue_counts_and_retention_check_match_moto_s(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import moto.sqs.models as models
    from moto import mock_aws

    from infra.local import quick_sqs

    original = models.Queue.__dict__["attributes"].fget
    assert original is not quick_sqs._attributes  # the patch only ever runs in the moto server's process
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(
            QueueName="q",
            Attributes={
                "RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "3"}}',
                "Policy": '{"Version": "2012-10-17", "Statement": []}',
            },
        )["QueueUrl"]
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": f"m{n}"} for n in range(6)])
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)["Messages"]
        assert len(received) == 2
        backend = models.sqs_backends["123456789012"]["us-east-1"]
        for name in ("q", "dlq"):
            queue = backend.get_queue(name)
            assert quick_sqs._attributes(queue) == original(queue)
        counts = quick_sqs._attributes(backend.get_queue("q"))
        assert (
            counts["ApproximateNumberOfMessages"],
            counts["ApproximateNumberOfMessagesDelayed"],
            counts["ApproximateNumberOfMessagesNotVisible"],
        ) == (4, 1, 2)
        message = backend.get_queue("q")._messages[0]
        assert quick_sqs._retention_ok(backend, "q", message) is backend.is_message_valid_based_on_retention_period(
            "q", message
        )
        message.sent_timestamp -= 5 * 24 * 3600 * 1000  # older than the default 4-day retention
        assert quick_sqs._retention_ok(backend, "q", message) is False
        assert backend.is_message_valid_based_on_retention_period("q", message) is False
