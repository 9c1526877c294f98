"""The worker's Lambda handler on mock_aws, with events shaped like Lambda's (from events/)."""

from __future__ import annotations

import copy
import json
import time
import warnings
from typing import Any

import boto3
import pytest

from citeq.config import Settings
from citeq.models import ChatRequest, Request
from citeq.store import Store
from citeq.worker import Worker
from infra.local.context import LambdaContext
from tests.helpers import ASSISTANT, Admin, load_event

QUESTION = "What does a request over the rate limit receive?"


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Worker:
    """The worker built by ``worker.app.build`` from this test's environment (moto resources, the emulator)."""
    from worker import app

    return app.build(Settings.from_env())


class Handler:
    """``worker.app.handler_for(worker)``: the deployed handler's body over this test's worker."""

    def __init__(self, worker: Worker) -> None:
        from worker import app

        self.worker = worker
        self.lambda_handler = app.handler_for(worker, 10)


@pytest.fixture
def app(worker: Worker) -> Handler:
    return Handler(worker)


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
        Request(request_id, ChatRequest.ask(QUESTION, ASSISTANT), batch_id=batch_id, seq=seq)
    )


def test_handler_answers_a_request_from_the_sample_event(app: Handler, store: Store, admin: Admin) -> None:
    event = load_event("sqs-request.json")
    response = app.lambda_handler(event, LambdaContext())
    assert response == {"batchItemFailures": []}
    item = store.get("b_0001-000001")
    assert item is not None and item.status == "succeeded" and item.attempts == 1
    assert item.answer is not None and item.answer["citations"][0]["references"][0]["pages"] == [2]
    assert admin.count("chat_completions") == 1


def test_mixed_batch_records_malformed_and_unknown_version_without_retrying(
    app: Handler, store: Store, admin: Admin
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
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-dup", "b-dup", 1)
    store.create_batch("b-dup", 1, source=None, idempotency_key=None)
    first = app.lambda_handler({"Records": [sqs_record(body("r-dup", batch_id="b-dup", seq=1))]}, LambdaContext())
    again = app.lambda_handler({"Records": [sqs_record(body("r-dup", batch_id="b-dup", seq=1), 2)]}, LambdaContext())
    assert first == again == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 1
    assert store.get_batch("b-dup").counts["succeeded"] == 1  # type: ignore[union-attr]


def test_records_of_one_invocation_run_concurrently(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
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


def test_rate_limited_record_is_deferred_without_spending_an_attempt(
    app: Handler, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    admin.script({"status": 429, "retry_after": 120})
    queued(store, "r-429")
    before = store.get("r-429")
    record = sqs_record(body("r-429", dispatch=before.dispatch))  # type: ignore[union-attr]
    response = app.lambda_handler({"Records": [record]}, LambdaContext())
    assert response == {"batchItemFailures": []}  # acknowledged: a fresh message is owed instead
    item = store.get("r-429")
    assert item is not None and before is not None
    assert item.status == "queued" and item.attempts == 0 and item.deferrals == 1 and item.failures == 0
    assert item.dispatch != before.dispatch  # the new message the stream sends
    assert item.not_before is not None and item.not_before >= time.time() + 100  # the service's Retry-After
    assert item.wait_reason is not None and "429" in item.wait_reason


def test_assistant_rejection_fails_the_request_with_its_reason(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
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


def test_last_attempt_of_a_retryable_error_fails_the_request_with_its_reason(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    admin.script({"status": 503, "count": 3})  # the client's own three attempts all fail
    queued(store, "r-last")
    record = sqs_record(body("r-last"), receive_count=6)
    response = app.lambda_handler({"Records": [record]}, LambdaContext())
    assert response == {"batchItemFailures": []}  # an outcome was recorded: nothing to dead-letter
    item = store.get("r-last")
    assert item is not None and item.status == "failed"
    assert item.error["message"].startswith("gave up after 1 failed attempts")  # type: ignore[index]
    assert item.error["http_status"] == 503  # type: ignore[index]
    assert admin.count("chat_completions") == 3


def test_failures_recorded_on_the_item_end_a_request_whatever_its_message_receive_count(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    admin.faults(rate_503=1.0)
    queued(store, "r-many")
    for n in range(1, 7):
        record = sqs_record(body("r-many"))  # a fresh message each time (as after deferrals): receive count 1
        response = app.lambda_handler({"Records": [record]}, LambdaContext())
        item = store.get("r-many")
        assert item is not None
        if n < 6:
            assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
            assert (item.status, item.failures) == ("queued", n)
    assert item.status == "failed", item
    assert item.error is not None and item.error["message"].startswith("gave up after 6 failed attempts")


def test_no_call_starts_that_cannot_finish_before_the_deadline(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
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
    app: Handler, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    queued(store, "r-cancel")
    item = store.get("r-cancel")
    assert item is not None and store.cancel(item)
    calls = _calls_by_operation(app)
    assert app.lambda_handler({"Records": [sqs_record(body("r-cancel"))]}, LambdaContext()) == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 0
    # One conditional claim, refused; then one read, and nothing more is written.
    assert len(calls["UpdateItem"]) == 1 and len(calls["GetItem"]) == 1
    assert store.get("r-cancel").status == "cancelled"  # type: ignore[union-attr]


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
    from worker import app

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    enabled = app.deployed(Settings.from_env())
    queued(store, "r-metrics")
    capsys.readouterr()
    assert enabled({"Records": [sqs_record(body("r-metrics"))]}, LambdaContext()) == {
        "batchItemFailures": []
    }
    documents = _emf(capsys.readouterr().out)
    published = {m["Name"] for d in documents for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Answered", "AssistantLatency", "PromptTokens", "CompletionTokens", "ColdStart"} <= published
    answered = next(d for d in documents if "Answered" in d)
    values = {name: v if isinstance(v, list) else [v] for name, v in answered.items() if name != "_aws"}
    assert sum(values["Answered"]) == 1.0 and len(values["AssistantLatency"]) == 1

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    disabled = app.deployed(Settings.from_env())
    queued(store, "r-quiet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert disabled({"Records": [sqs_record(body("r-quiet"))]}, LambdaContext()) == {
            "batchItemFailures": []
        }
    assert [str(w.message) for w in caught if "metric" in str(w.message).lower()] == []
    assert _emf(capsys.readouterr().out) == []
    assert store.get("r-quiet").status == "succeeded"  # type: ignore[union-attr]


def _calls_by_operation(app: Handler) -> dict[str, list[dict[str, Any]]]:
    """Record the parameters of every DynamoDB call the worker's store makes, by operation."""
    calls: dict[str, list[dict[str, Any]]] = {}

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.setdefault(model.name, []).append(params)

    app.worker.store.client.meta.events.register("provide-client-params.dynamodb.*", record)
    return calls


def test_an_answer_costs_two_writes_and_no_other_record(
    app: Handler, store: Store, admin: Admin, sqs_record: Any, worker_env: dict[str, str]
) -> None:
    queued(store, "r-one", "b-one", 1)
    store.create_batch("b-one", 1, source=None, idempotency_key=None)
    calls = _calls_by_operation(app)
    record = sqs_record(body("r-one", batch_id="b-one", seq=1))
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    table = worker_env["CITEQ_TABLE"]
    # The claim and the answer, each with the batch counters: the request item is the only record kept.
    assert sorted(calls) == ["TransactWriteItems"]
    writes = [
        [(kind, entry["TableName"]) for item in call["TransactItems"] for kind, entry in item.items()]
        for call in calls["TransactWriteItems"]
    ]
    assert writes == [
        [("Update", table), ("Update", table)],
        [("Update", table), ("Update", table)],
    ]
    # A redelivery: one refused claim and one read; no second answer, nothing counted twice.
    again = app.lambda_handler({"Records": [sqs_record(body("r-one", batch_id="b-one", seq=1), 2)]}, LambdaContext())
    assert again == {"batchItemFailures": []}
    assert admin.count("chat_completions") == 1
    assert len(calls["TransactWriteItems"]) == 3 and len(calls["GetItem"]) == 1
    assert store.get_batch("b-one").counts == {  # type: ignore[union-attr]
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
    }


def test_a_second_live_delivery_is_handed_back_until_the_lease_ends(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    import threading

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


def test_an_attempt_that_died_is_taken_over_once_its_lease_ends(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-died", "b-died", 1)
    store.create_batch("b-died", 1, source=None, idempotency_key=None)
    item = store.get("r-died")
    assert item is not None
    # An earlier delivery claimed it with a lease that has ended, then its process died.
    assert store.claim(item, lease_until=time.time() - 1) is not None
    record = sqs_record(body("r-died", batch_id="b-died", seq=1), 2)
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    item = store.get("r-died")
    assert item is not None and item.status == "succeeded"
    assert (item.attempts, item.failures) == (2, 1)  # the dead attempt counts as a failure
    assert admin.count("chat_completions") == 1
    assert store.get_batch("b-died").counts["succeeded"] == 1  # type: ignore[union-attr]


def test_an_unexpected_exception_releases_the_lease_and_is_logged_at_error(
    app: Handler, store: Store, admin: Admin, sqs_record: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queued(store, "r-bug")
    real_chat = app.worker.client.chat
    app.worker.client.chat = lambda *_, **__: (_ for _ in ()).throw(KeyError("surprise"))  # type: ignore[method-assign]
    record = sqs_record(body("r-bug"))
    with caplog.at_level("ERROR", logger="citeq.worker"):
        response = app.lambda_handler({"Records": [record]}, LambdaContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "r-bug" in r.getMessage()]
    assert errors and "KeyError" in errors[0].getMessage()
    item = store.get("r-bug")
    assert item is not None and item.status == "queued" and item.lease_until is None  # released at once
    assert item.error is not None and item.error["type"] == "KeyError" and item.failures == 1
    app.worker.client.chat = real_chat  # type: ignore[method-assign]
    assert app.lambda_handler({"Records": [sqs_record(body("r-bug"), 2)]}, LambdaContext()) == {"batchItemFailures": []}
    assert store.get("r-bug").status == "succeeded"  # type: ignore[union-attr]


def test_a_superseded_message_does_nothing(app: Handler, store: Store, admin: Admin, sqs_record: Any) -> None:
    queued(store, "r-old")
    item = store.get("r-old")
    assert item is not None
    deferred = store.defer(item, time.time() + 600, "waiting for token budget")  # a newer message is owed
    assert deferred is not None
    stale = sqs_record(body("r-old", dispatch=item.dispatch))
    assert app.lambda_handler({"Records": [stale]}, LambdaContext()) == {"batchItemFailures": []}
    after = store.get("r-old")
    assert after is not None and (after.status, after.dispatch, after.attempts) == ("queued", deferred.dispatch, 0)
    assert admin.count("chat_completions") == 0


def test_a_message_that_arrives_before_its_time_is_put_off_again(
    app: Handler, store: Store, admin: Admin, sqs_record: Any
) -> None:
    queued(store, "r-early")
    item = store.get("r-early")
    assert item is not None
    later = time.time() + 3600  # longer than SQS's 15-minute delay: the message comes early
    deferred = store.defer(item, later, "assistant paused")
    assert deferred is not None
    record = sqs_record(body("r-early", dispatch=deferred.dispatch))
    assert app.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
    after = store.get("r-early")
    assert after is not None and after.status == "queued" and after.attempts == 0
    assert after.dispatch != deferred.dispatch and after.not_before == pytest.approx(later, abs=0.01)
    assert admin.count("chat_completions") == 0
