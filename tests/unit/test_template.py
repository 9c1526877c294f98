"""template.yaml hardening (issue 11), read with the same loader the local stack uses."""

from __future__ import annotations

from typing import Any

import pytest

from infra.local.template import load

TEMPLATE = load()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = [name for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"]


def _of_type(kind: str) -> dict[str, Any]:
    return {name: r["Properties"] for name, r in RESOURCES.items() if r["Type"] == kind}


def test_every_alarm_notifies_the_topic_and_email_is_a_parameter() -> None:
    alarms = _of_type("AWS::CloudWatch::Alarm")
    assert alarms and all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())
    assert RESOURCES["AlarmEmailSubscription"]["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert RESOURCES["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def _watched(metric: str) -> set[str]:
    found = set()
    for alarm in _of_type("AWS::CloudWatch::Alarm").values():
        if alarm["MetricName"] == metric:
            value = alarm["Dimensions"][0]["Value"]
            found.add(value.get("Ref") or value["Fn::GetAtt"][0])
    return found


def test_alarms_cover_queue_age_function_errors_throttles_and_both_dead_letter_queues() -> None:
    assert {"RequestsQueue", "CallbackQueue"} <= _watched("ApproximateAgeOfOldestMessage")
    assert set(FUNCTIONS) <= _watched("Errors") and set(FUNCTIONS) <= _watched("Throttles")
    assert {"RequestsDeadLetterQueue", "CallbackDeadLetterQueue"} <= _watched("ApproximateNumberOfMessagesVisible")


def test_a_public_stream_url_gets_both_public_permissions() -> None:
    permissions = {
        r["Properties"]["Action"]: r for r in RESOURCES.values() if r["Type"] == "AWS::Lambda::Permission"
    }
    assert set(permissions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert all(p["Condition"] == "StreamIsPublic" for p in permissions.values())
    assert permissions["lambda:InvokeFunction"]["Properties"]["InvokedViaFunctionUrl"] is True
    assert TEMPLATE["Conditions"]["StreamIsPublic"] == {"Fn::Equals": [{"Ref": "StreamAuthType"}, "NONE"]}


def test_the_public_webhook_has_reserved_concurrency_and_callbacks_a_maximum_concurrency() -> None:
    assert RESOURCES["WebhookFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Ref": "WebhookReservedConcurrency"
    }
    deliveries = RESOURCES["CallbackFunction"]["Properties"]["Events"]["Deliveries"]["Properties"]
    assert deliveries["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "CallbackMaximumConcurrency"}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_has_a_log_group_with_retention(function: str) -> None:
    groups = _of_type("AWS::Logs::LogGroup").values()
    assert any(
        g["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
        and g["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        for g in groups
    )


WRITES = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"}
EXPECTED_ACTIONS = {
    "WorkerFunction": WRITES,
    "StreamFunction": {"dynamodb:GetItem", "dynamodb:PutItem"},
    "WebhookFunction": {"dynamodb:GetItem", "dynamodb:PutItem"},
    "CallbackFunction": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    "ReconcilerFunction": WRITES | {"dynamodb:BatchGetItem"},  # the sweep re-reads the open requests
    "DispatcherFunction": set(),  # reads the table's stream only
}


def test_only_the_reconciler_may_query_the_open_index_and_its_sweep_runs_every_10_minutes() -> None:
    index = {"Fn::Sub": "${ResultsTable.Arn}/index/open"}
    readers = {
        name
        for name in FUNCTIONS
        for p in RESOURCES[name]["Properties"]["Policies"]
        for statement in p.get("Statement", [])
        if statement["Resource"] == index
    }
    assert readers == {"ReconcilerFunction"}
    table = RESOURCES["ResultsTable"]["Properties"]
    (open_index,) = [i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == "open"]
    assert open_index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    events = RESOURCES["ReconcilerFunction"]["Properties"]["Events"]
    assert events["Sweep"]["Properties"] == {"Schedule": "rate(10 minutes)", "Input": '{"sweep": true}'}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_may_use_only_the_results_table_actions_it_needs(function: str) -> None:
    policies = RESOURCES[function]["Properties"]["Policies"]
    assert not any(p.get("DynamoDBCrudPolicy") == {"TableName": {"Ref": "ResultsTable"}} for p in policies)
    actions = {
        action
        for p in policies
        for statement in p.get("Statement", [])
        if statement["Resource"] == {"Fn::GetAtt": ["ResultsTable", "Arn"]}
        for action in statement["Action"]
    }
    assert actions == EXPECTED_ACTIONS[function]
    assert not actions & {"dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:*"}
