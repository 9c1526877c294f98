"""The worker's Lambda handler on mock_aws, with events shaped like Lambda's (from events/)."""

from __future__ import annotations

import copy
import importlib
import json
import sys
import warnings
from types import ModuleType
from typing import Any

import boto3
import pytest

from citeq.store import NewRequest, Store
from infra.local.context import LambdaContext
from tests.helpers import ASSISTANT, Admin, load_event

QUESTION = "What does a request over the rate limit receive?"


@pytest.fixture
def app(worker_env: dict[str, str]) -> ModuleType:
    """``worker.app`` imported against this test's moto resources."""
    if "worker.app" in sys.modules:
        return importlib.reload(sys.modules["worker.app"])
    return importlib.import_module("worker.app")


@pytest.fixture
def store(worker_env: dict[str, str]) -> Store:
    return Store(worker_env["CITEQ_TABLE"])


@pytest.fixture
def sqs_record(worker_env: dict[str, str]) -> Any:
    """Factory: a Lambda SQS record for ``body``, really sent to and received from the (mocked) queue."""
    sqs = boto3.client("sqs")
    template = load_event("sqs-request.json")["Records"][0]

    def make(body: str, receive_count: int = 1) -> dict[str, Any]:
        url = worker_env["CITEQ_QUEUE_URL"]
        sqs.send_message(QueueUrl=url, MessageBody=body)
        message = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
        record = copy.deepcopy(template)
        record.update(messageId=message["MessageId"], receiptHandle=message["ReceiptHandle"], body=body)
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        return record

    return make


def body(request_id: str, question: str = QUESTION, **extra: Any) -> str:
    return json.dumps(
        {
            "v": 1,
            "request_id": request_id,
            "assistant": ASSISTANT,
            "messages": [{"role": "user", "content": question}],
            **extra,
        }
    )


def queued(store: Store, request_id: str, batch_id: str | None = None, seq: int | None = None) -> None:
    store.put_request(
        NewRequest(request_id, ASSISTANT, [{"role": "user", "content": QUESTION}], batch_id=batch_id, seq=seq)
    )


def test_handler_answers_a_request_from_the_sample_event(app: ModuleType, store: Store, admin: Admin) -> None:
    event = load_event("sqs-request.json")
    response = app.lambda_handler(event, LambdaContext())
    assert response == {"batchItemFailures": []}
    item = store.get("b_0001-000001")
    assert item is not None and item.status == "succeeded" and item.attempts == 1
    assert item.answer is not None and item.answer["citations"][0]["references"][0]["pages"] == [2]
    assert admin.count("chat_completions") == 1


def test_mixed_batch_records_malformed_and_unknown_version_without_retrying(
    app: ModuleType, store: Store, admin: Admin
) -> None:
    event = load_event("sqs-mixed-batch.json")
    response = app.lambda_handler(event, LambdaContext())
    assert response == {"batchItemFailures": []}  # nothing handed back: bad messages are recorded, not retried
    assert store.get("b_0002-000001").status == "succeeded"  # type: ignore[union-attr]
    garbage = store.get("malformed-0c1d1a3e-0002-4c55-9a2b-6f0b3d4e5a02")
    assert garbage is not None and garbage.status == "failed"
    assert "not JSON" in garbage.error["message"]  # type: ignore[index]
    unknown = store.get("malformed-0c1d1a3e-0003-4c55-9a2b-6f0b3d4e5a03")
    assert unknown is not None and "unsupported message version 2" in unknown.error["message"]  # type: ignore[index]
    assert admin.count("chat_completions") == 1


def test_redelivery_after_success_never_calls_the_assistant_again(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-dup", "b-dup", 1)
    store.create_batch("b-dup", 1, source=None, idempotency_key=None)
    first = app.lambda_handler({"Records": [sqs_record(body("r-dup", batch_id="b-dup", seq=1))]}, LambdaContext())
    again = app.lambda_handler({"Records": [sqs_record(body("r-dup", batch_id="b-dup", seq=1), 2)]}, LambdaContext())
    assert first == again == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 1
    assert store.get_batch("b-dup").counts["succeeded"] == 1  # type: ignore[union-attr]


def test_records_of_one_invocation_run_concurrently(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    import time

    admin.faults(latency_ms=300)
    records = []
    for n in range(5):
        queued(store, f"r-c{n}")
        records.append(sqs_record(body(f"r-c{n}")))
    start = time.perf_counter()
    assert app.lambda_handler({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
    assert time.perf_counter() - start < 5 * 0.3  # sequential would be at least 1.5 s
    assert admin.count("chat_completions") == 5


def test_rate_limited_record_is_handed_back_with_retry_after_as_visibility(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    admin.script({"status": 429, "retry_after": 120})
    queued(store, "r-429")
    record = sqs_record(body("r-429"))
    response = app.lambda_handler({"Records": [record]}, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    item = store.get("r-429")
    assert item is not None and item.status == "queued" and item.attempts == 1
    assert item.error is not None and item.error["http_status"] == 429
    sqs = boto3.client("sqs")
    # Made invisible for the Retry-After seconds: not receivable now.
    assert "Messages" not in sqs.receive_message(QueueUrl=worker_env["CITEQ_QUEUE_URL"], WaitTimeSeconds=0)


def test_assistant_rejection_fails_the_request_with_its_reason(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-400")
    record = sqs_record(body("r-400", options={"model": "gpt-99"}))
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    item = store.get("r-400")
    assert item is not None and item.status == "failed"
    assert item.error == {
        "type": "BadRequestError",
        "message": item.error["message"],
        "http_status": 400,  # type: ignore[index]
        "code": "INVALID_ARGUMENT",
    }
    assert admin.count("chat_completions") == 1


def test_last_delivery_of_a_retryable_error_fails_the_request_and_goes_to_the_dlq(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    admin.script({"status": 503, "count": 3})  # the client's own three attempts all fail
    queued(store, "r-last")
    record = sqs_record(body("r-last"), receive_count=6)
    response = app.lambda_handler({"Records": [record]}, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    item = store.get("r-last")
    assert item is not None and item.status == "failed"
    assert item.error["message"].startswith("gave up after 6 deliveries")  # type: ignore[index]
    assert item.error["http_status"] == 503  # type: ignore[index]
    assert admin.count("chat_completions") == 3


def test_no_call_starts_that_cannot_finish_before_the_deadline(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-late")
    record = sqs_record(body("r-late"))
    context = LambdaContext(timeout_seconds=4.0)  # minus the 3 s margin: too little for an attempt
    response = app.lambda_handler({"Records": [record]}, context)
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert admin.count("chat_completions") == 0
    item = store.get("r-late")
    assert item is not None and item.status == "queued" and item.error["type"] == "DeadlineExceeded"  # type: ignore[index]


def test_cancelled_request_is_skipped(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    queued(store, "r-cancel")
    item = store.get("r-cancel")
    assert item is not None and store.cancel(item)
    calls = _calls_by_operation(app)
    assert app.lambda_handler({"Records": [sqs_record(body("r-cancel"))]}, LambdaContext()) == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 0
    # One claim, cancelled with the idempotency record's write; then a read, and the claim is not tried again.
    assert len(calls["TransactWriteItems"]) == 1
    assert [c for c in calls.get("UpdateItem", []) if c["TableName"] == worker_env["CITEQ_TABLE"]] == []


def _emf(output: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents among the handler's printed lines."""
    documents = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def test_metrics_are_published_as_emf_when_enabled_and_not_at_all_when_disabled(
    worker_env: dict[str, str], store: Store, sqs_record: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    if "worker.app" in sys.modules:
        enabled = importlib.reload(sys.modules["worker.app"])
    else:
        enabled = importlib.import_module("worker.app")
    queued(store, "r-metrics")
    capsys.readouterr()
    assert enabled.lambda_handler({"Records": [sqs_record(body("r-metrics"))]}, LambdaContext()) == {
        "batchItemFailures": []
    }
    documents = _emf(capsys.readouterr().out)
    published = {m["Name"] for d in documents for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Answered", "AssistantLatency", "PromptTokens", "CompletionTokens", "ColdStart"} <= published
    answered = next(d for d in documents if "Answered" in d)
    values = {name: v if isinstance(v, list) else [v] for name, v in answered.items() if name != "_aws"}
    assert sum(values["Answered"]) == 1.0 and len(values["AssistantLatency"]) == 1

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    disabled = importlib.reload(sys.modules["worker.app"])
    queued(store, "r-quiet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert disabled.lambda_handler({"Records": [sqs_record(body("r-quiet"))]}, LambdaContext()) == {
            "batchItemFailures": []
        }
    assert [str(w.message) for w in caught if "metric" in str(w.message).lower()] == []
    assert _emf(capsys.readouterr().out) == []
    assert store.get("r-quiet").status == "succeeded"  # type: ignore[union-attr]


def _calls_by_operation(app: ModuleType) -> dict[str, list[dict[str, Any]]]:
    """Record the parameters of every DynamoDB call the worker module makes, by operation."""
    calls: dict[str, list[dict[str, Any]]] = {}

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.setdefault(model.name, []).append(params)

    app.dynamodb.meta.events.register("provide-client-params.dynamodb.*", record)
    return calls


def test_an_answer_costs_two_writes_each_with_its_idempotency_record(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    queued(store, "r-one", "b-one", 1)
    store.create_batch("b-one", 1, source=None, idempotency_key=None)
    calls = _calls_by_operation(app)
    record = sqs_record(body("r-one", batch_id="b-one", seq=1))
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    idempotency_table = worker_env["CITEQ_IDEMPOTENCY_TABLE"]
    # Powertools' own put and update of the record were not needed: the request's transactions wrote it.
    assert [
        c for c in calls.get("PutItem", []) + calls.get("UpdateItem", []) if c["TableName"] == idempotency_table
    ] == []
    assert len(calls["TransactWriteItems"]) == 2
    claim, result = (
        [(kind, entry["TableName"]) for item in c["TransactItems"] for kind, entry in item.items()]
        for c in calls["TransactWriteItems"]
    )
    table = worker_env["CITEQ_TABLE"]
    assert claim == [("Update", table), ("Update", table), ("Put", idempotency_table)]  # request, batch, record
    assert result == [("Update", table), ("Update", table), ("Update", idempotency_table)]
    records = boto3.client("dynamodb").scan(TableName=idempotency_table)["Items"]
    assert len(records) == 1 and records[0]["status"]["S"] == "COMPLETED"
    assert json.loads(records[0]["data"]["S"]) == {"request_id": "r-one", "status": "succeeded"}
    # A redelivery finds the completed record: no second answer, nothing counted twice.
    again = app.lambda_handler({"Records": [sqs_record(body("r-one", batch_id="b-one", seq=1), 2)]}, LambdaContext())
    assert again == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 1
    assert len(calls["TransactWriteItems"]) == 3  # the redelivery's one claim, cancelled; no second try
    assert store.get_batch("b-one").counts == {  # type: ignore[union-attr]
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
    }


def test_other_outcomes_complete_the_idempotency_record_through_powertools(
    app: ModuleType, store: Store, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    queued(store, "r-rejected")
    calls = _calls_by_operation(app)
    record = sqs_record(body("r-rejected", options={"model": "gpt-99"}))
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    idempotency_table = worker_env["CITEQ_IDEMPOTENCY_TABLE"]
    assert len([c for c in calls.get("UpdateItem", []) if c["TableName"] == idempotency_table]) == 1
    records = boto3.client("dynamodb").scan(TableName=idempotency_table)["Items"]
    assert json.loads(records[0]["data"]["S"]) == {"request_id": "r-rejected", "status": "failed"}


def test_a_second_live_delivery_neither_calls_the_assistant_nor_leaves_a_claim(
    app: ModuleType, store: Store, admin: Admin, sqs_record: Any
) -> None:
    import threading
    import time

    admin.faults(latency_ms=400)
    queued(store, "r-twice", "b-twice", 1)
    store.create_batch("b-twice", 1, source=None, idempotency_key=None)
    first, second = (sqs_record(body("r-twice", batch_id="b-twice", seq=1), n) for n in (1, 2))
    responses: dict[str, Any] = {}
    worker_thread = threading.Thread(
        target=lambda: responses.update(first=app.lambda_handler({"Records": [first]}, LambdaContext()))
    )
    worker_thread.start()
    while admin.count("chat_completions") == 0 and worker_thread.is_alive():  # the first is being answered
        time.sleep(0.01)
    responses["second"] = app.lambda_handler({"Records": [second]}, LambdaContext())
    worker_thread.join()
    assert responses["first"] == {"batchItemFailures": []}
    assert responses["second"] == {"batchItemFailures": [{"itemIdentifier": second["messageId"]}]}  # handed back
    assert admin.count("chat_completions") == 1
    item = store.get("r-twice")
    assert item is not None and item.status == "succeeded" and item.attempts == 1
    assert store.get_batch("b-twice").counts["succeeded"] == 1  # type: ignore[union-attr]
