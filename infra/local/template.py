"""Read template.yaml as the local stack needs it: the queue and table resources as written (to create in
moto), and the worker's event-source settings (batch size, window, concurrency, timeouts, redrive)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
LOCAL_TYPES = ("AWS::SQS::Queue", "AWS::DynamoDB::Table")


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation's short tags into their long JSON forms."""


def _tag(name: str, split: bool = False) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if split and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


_CfnLoader.add_constructor("!Ref", lambda loader, node: {"Ref": loader.construct_scalar(node)})  # type: ignore[arg-type]
_CfnLoader.add_constructor("!GetAtt", _tag("Fn::GetAtt", split=True))
for _short in (
    "Sub",
    "Join",
    "Select",
    "Split",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "Base64",
    "Cidr",
    "ImportValue",
    "GetAZs",
):
    _CfnLoader.add_constructor(f"!{_short}", _tag(f"Fn::{_short}"))


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The whole template as plain data."""
    return dict(yaml.load(path.read_text(), Loader=_CfnLoader))  # noqa: S506 - a SafeLoader subclass


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]]
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """What the poller needs to behave like Lambda's SQS event source mapping."""

    timeout: int
    batch_size: int
    window: float
    max_concurrency: int
    max_receives: int
    environment: dict[str, Any]


def local_resources(template: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation template holding just the queues and tables, exactly as template.yaml defines them."""
    resources = {name: r for name, r in template["Resources"].items() if r["Type"] in LOCAL_TYPES}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}


def worker_settings(template: dict[str, Any]) -> WorkerSettings:
    """The WorkerFunction's timeout, environment and SQS event properties (parameters at their defaults)."""
    parameters = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
    function = template["Resources"]["WorkerFunction"]["Properties"]
    event = next(iter(function["Events"].values()))["Properties"]
    queue_name = event["Queue"]["Fn::GetAtt"][0]
    redrive = template["Resources"][queue_name]["Properties"]["RedrivePolicy"]
    return WorkerSettings(
        timeout=int(function["Timeout"]),
        batch_size=int(_resolve(event.get("BatchSize", 10), parameters)),
        window=float(_resolve(event.get("MaximumBatchingWindowInSeconds", 0), parameters)),
        max_concurrency=int(_resolve(event.get("ScalingConfig", {}).get("MaximumConcurrency", 2), parameters)),
        max_receives=int(redrive["maxReceiveCount"]),
        environment=function.get("Environment", {}).get("Variables", {}),
    )


@dataclass(frozen=True)
class DispatcherSettings:
    """What the stream poller needs to behave like the dispatcher's DynamoDB event source mapping."""

    timeout: int
    batch_size: int
    filters: list[dict[str, Any]]


def dispatcher_settings(template: dict[str, Any]) -> DispatcherSettings:
    """The DispatcherFunction's timeout and stream event properties (its FilterCriteria patterns parsed)."""
    function = template["Resources"]["DispatcherFunction"]["Properties"]
    event = next(iter(function["Events"].values()))["Properties"]
    patterns = [json.loads(f["Pattern"]) for f in event.get("FilterCriteria", {}).get("Filters", [])]
    return DispatcherSettings(
        timeout=int(function["Timeout"]), batch_size=int(event.get("BatchSize", 100)), filters=patterns
    )


def create_resources(body: dict[str, Any], *, cloudformation: Any, dynamodb: Any, stack_name: str) -> dict[str, str]:
    """Create ``local_resources(...)`` through (moto's) CloudFormation; returns logical -> physical ids.

    moto's CloudFormation does not apply ``TimeToLiveSpecification``, so it is applied here as written.
    """
    cloudformation.create_stack(StackName=stack_name, TemplateBody=json.dumps(body))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    }
    for name, resource in body["Resources"].items():
        ttl = resource["Properties"].get("TimeToLiveSpecification")
        if resource["Type"] == "AWS::DynamoDB::Table" and ttl:
            dynamodb.update_time_to_live(TableName=resources[name], TimeToLiveSpecification=ttl)
    return resources
