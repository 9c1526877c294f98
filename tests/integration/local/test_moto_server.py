"""The local moto server (``infra.local.moto_process``) in its own process: one kept-alive connection serves
every call, and DynamoDB, SQS (through their shortcuts) and STS (through moto's dispatcher) all answer."""

from __future__ import annotations

import threading
from typing import Any


def test_the_moto_server_keeps_connections_open_and_serves_every_service() -> None:
    import subprocess
    import sys

    import boto3
    import urllib3.connection

    from tests.helpers import ROOT

    server = subprocess.Popen(
        [sys.executable, "-m", "infra.local.moto_process"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        opened = []
        original = urllib3.connection.connection.create_connection
        lock = threading.Lock()

        def counting(*args: Any, **kwargs: Any) -> Any:
            with lock:
                opened.append(args[0])
            return original(*args, **kwargs)

        urllib3.connection.connection.create_connection = counting
        try:
            options = {"endpoint_url": endpoint, "region_name": "us-east-1"}
            dynamodb = boto3.client("dynamodb", **options)
            dynamodb.create_table(
                TableName="t",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            for _ in range(20):
                dynamodb.update_item(
                    TableName="t",
                    Key={"pk": {"S": "c"}},
                    UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}},
                )
            assert dynamodb.get_item(TableName="t", Key={"pk": {"S": "c"}})["Item"]["n"] == {"N": "20"}
            assert len(opened) == 1  # one connection for 22 calls: HTTP/1.1 keep-alive
            # SQS takes its shortcut too; STS (a query-protocol call) goes through moto's own dispatcher.
            sqs = boto3.client("sqs", **options)
            url = sqs.create_queue(QueueName="q")["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody="hello")
            assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hello"
            sts = boto3.client("sts", **options)
            assert sts.get_caller_identity()["Account"] == "123456789012"
        finally:
            urllib3.connection.connection.create_connection = original
    finally:
        server.terminate()
        server.wait(10)
