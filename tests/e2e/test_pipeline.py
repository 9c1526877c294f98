"""The batch pipeline end to end on the local stack: submit -> SQS -> worker -> DynamoDB."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import boto3

from citeq import batch, dlq
from citeq.cli import EXIT_FAILURES, EXIT_OK, Factory, main
from citeq.config import Settings
from citeq.messages import encode
from citeq.models import STATUSES
from citeq.queue import Queue
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import QUESTIONS, Admin


def wait_until(check: Callable[[], bool], timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def jsonl(count: int, prefix: str, **extra: Any) -> str:
    return "\n".join(
        json.dumps({"custom_id": f"{prefix}-{n}", "question": QUESTIONS[n % len(QUESTIONS)], **extra})
        for n in range(count)
    )


def submit(store: Store, queue: Queue, text: str) -> str:
    parsed = batch.parse(text, fmt="jsonl", default_assistant="citeq-demo")
    return batch.submit(parsed, store=store).batch_id


def finished(store: Store, batch_id: str) -> Callable[[], bool]:
    def check() -> bool:
        info = store.get_batch(batch_id)
        return info is not None and info.done

    return check


def drained(queue: Queue) -> Callable[[], bool]:
    return lambda: queue.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def assert_counts_sum(store: Store, batch_id: str) -> dict[str, int]:
    info = store.get_batch(batch_id)
    assert info is not None
    assert sum(info.counts.values()) == info.total
    by_status = {s: 0 for s in STATUSES}
    for item in store.iter_batch(batch_id):
        by_status[item.status] += 1
    assert by_status == info.counts  # counters agree with the items themselves
    return info.counts


def test_200_questions_answered_once_each_and_redelivery_changes_nothing(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    batch_id = submit(store, queue, jsonl(200, "q"))
    wait_until(finished(store, batch_id), what="200 answers")
    assert assert_counts_sum(store, batch_id)["succeeded"] == 200
    wait_until(drained(queue), what="queue drained")
    assert emu.count("chat_completions") == 200
    items = list(store.iter_batch(batch_id))
    assert [i.custom_id for i in items] == [f"q-{n}" for n in range(200)]
    assert all(i.attempts == 1 and i.answer and i.answer["citations"] for i in items)

    # The same 20 messages delivered again (as SQS may): no assistant call, counters unchanged.
    queue.send([(i.request_id, encode(i)) for i in items[:20]])
    wait_until(drained(queue), what="redeliveries processed")
    assert emu.count("chat_completions") == 200
    assert assert_counts_sum(store, batch_id)["succeeded"] == 200


def test_429_storm_with_retry_after_answers_everything_and_leaves_the_dlq_empty(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    emu.faults(rate_429=0.6, retry_after=1, seed=11)
    batch_id = submit(store, queue, jsonl(30, "storm"))
    wait_until(finished(store, batch_id), timeout=120, what="storm batch")
    assert assert_counts_sum(store, batch_id)["succeeded"] == 30
    assert emu.count("chat_completions", status="429") > 0
    assert emu.count("chat_completions", status="200") == 30
    assert queue.depth(stack.dlq_url)["visible"] == 0


def test_rejected_question_fails_with_its_reason_and_the_rest_succeed(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    text = jsonl(5, "ok") + "\n" + json.dumps({"custom_id": "bad", "question": "Hi?", "model": "gpt-99"})
    batch_id = submit(store, queue, text)
    wait_until(finished(store, batch_id), what="batch with a rejected question")
    counts = assert_counts_sum(store, batch_id)
    assert (counts["succeeded"], counts["failed"]) == (5, 1)
    bad = next(i for i in store.iter_batch(batch_id) if i.custom_id == "bad")
    assert bad.error is not None and bad.error["http_status"] == 400 and "Invalid model" in bad.error["message"]
    assert bad.attempts == 1


def test_context_options_on_a_batch_line_are_answered_by_the_standard_chat_with_citations(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    text = jsonl(2, "scoped", context_options={"top_k": 4, "snippet_size": 1024}) + "\n" + jsonl(1, "plain")
    batch_id = submit(store, queue, text)
    wait_until(finished(store, batch_id), what="batch with context options")
    items = {i.custom_id: i for i in store.iter_batch(batch_id)}
    assert all(i.status == "succeeded" and i.attempts == 1 for i in items.values()), items
    scoped = items["scoped-0"]
    assert scoped.chat.options.context_options == {"top_k": 4, "snippet_size": 1024}
    assert scoped.answer is not None and scoped.answer["citations"] and scoped.answer["usage"]["prompt_tokens"] > 0
    # The two scoped requests went to the standard chat, the plain one to the OpenAI-compatible endpoint.
    assert (emu.count("chat"), emu.count("chat_completions")) == (2, 1)
    # The same question with a quarter of the snippets, each half as long, carries far less context.
    plain = items["plain-0"]
    assert plain.answer is not None and plain.question == scoped.question
    assert scoped.answer["usage"]["prompt_tokens"] < plain.answer["usage"]["prompt_tokens"] / 2


def test_malformed_message_is_recorded_and_not_retried(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    sqs = boto3.client("sqs")
    message_id = sqs.send_message(QueueUrl=stack.queue_url, MessageBody='{"v": 1, "oops": true}')["MessageId"]
    wait_until(lambda: store.get(f"malformed-{message_id}") is not None, what="malformed record")
    wait_until(drained(queue), what="queue drained")
    item = store.get(f"malformed-{message_id}")
    assert item is not None and item.status == "failed" and "invalid message" in item.error["message"]  # type: ignore[index]
    assert queue.depth(stack.dlq_url)["visible"] == 0
    assert emu.count("chat_completions") == 0


def test_worker_dying_mid_batch_loses_nothing_and_answers_nothing_twice(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    assert stack.poller is not None
    real = stack.poller.handler
    died: list[int] = []

    def dies_once(event: dict[str, Any], context: Any) -> Any:
        if not died and len(event["Records"]) > 1:
            half = len(event["Records"]) // 2
            died.append(half)
            real({"Records": event["Records"][:half]}, context)  # these get answered and stored...
            raise RuntimeError("worker died")  # ...then the process dies before reporting anything
        return real(event, context)

    stack.poller.handler = dies_once
    try:
        batch_id = submit(store, queue, jsonl(20, "crash"))
        wait_until(finished(store, batch_id), what="batch after a crash")
        wait_until(drained(queue), what="queue drained")
    finally:
        stack.poller.handler = real
    assert died
    assert assert_counts_sum(store, batch_id)["succeeded"] == 20
    assert emu.count("chat_completions") == 20  # the redelivered, already-answered ones were not asked again


def test_exhausted_retries_fail_with_reason_and_batch_retry_brings_them_back(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    emu.faults(rate_503=1.0, retry_after=1)
    batch_id = submit(store, queue, jsonl(1, "doomed"))
    wait_until(finished(store, batch_id), timeout=120, what="retries exhausted")
    item = next(store.iter_batch(batch_id))
    assert item.status == "failed" and item.error["message"].startswith("gave up after 6 failed attempts")  # type: ignore[index]
    wait_until(drained(queue), what="queue drained")
    assert queue.depth(stack.dlq_url)["visible"] == 0  # an outcome was recorded: nothing is dead-lettered

    emu.faults()  # the assistant recovers
    code, out = _cli(["batch", "retry", batch_id])
    assert (code, out.strip()) == (EXIT_OK, "re-enqueued 1 failed requests")
    wait_until(lambda: store.get(item.request_id).status == "succeeded", what="succeeded")  # type: ignore[union-attr]
    assert assert_counts_sum(store, batch_id)["succeeded"] == 1


def test_a_message_whose_every_delivery_dies_is_reconciled_from_the_dlq_and_redriven(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue
) -> None:
    assert stack.poller is not None
    real = stack.poller.handler

    def always_dies(event: dict[str, Any], context: Any) -> Any:
        raise RuntimeError("invocation killed before doing anything")

    stack.poller.handler = always_dies
    try:
        batch_id = submit(store, queue, jsonl(1, "doomed"))
        wait_until(lambda: queue.depth(stack.dlq_url)["visible"] == 1, timeout=120, what="message in the DLQ")
    finally:
        stack.poller.handler = real
    item = next(store.iter_batch(batch_id))
    assert item.status == "queued"  # nothing ran: only the reconciler can tell
    assert stack.reconcile() == 1
    item = next(store.iter_batch(batch_id))
    assert item.status == "failed"
    assert item.error is not None and item.error["message"].startswith("delivery abandoned after 6 receives")
    assert assert_counts_sum(store, batch_id)["failed"] == 1
    assert stack.reconcile() == 0  # reconciling again changes nothing
    letters = dlq.show(store=store, queue=queue)
    assert [(letter.request_id, letter.row()["status"]) for letter in letters] == [(item.request_id, "failed")]
    assert "delivery abandoned" in letters[0].row()["reason"]
    code, out = _cli(["dlq", "show", "--json"])  # listing leaves the message in the DLQ
    assert code == EXIT_OK and json.loads(out)["request_id"] == item.request_id
    wait_until(lambda: queue.depth(stack.dlq_url)["visible"] == 1, what="message visible again after listing")

    code, out = _cli(["dlq", "redrive"])
    assert (code, out.strip()) == (EXIT_OK, "moved 1 messages back to the queue")
    wait_until(lambda: store.get(item.request_id).status == "succeeded", what="redriven request answered")  # type: ignore[union-attr]
    assert assert_counts_sum(store, batch_id)["succeeded"] == 1
    assert queue.depth(stack.dlq_url)["visible"] == 0
    assert emu.count("chat_completions") == 1


def _cli(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(args, factory=Factory(Settings.from_env()), out=out, err=out)
    return code, out.getvalue()


def test_cli_submit_wait_results_retry_and_idempotency_key(
    stack: LocalStack, emu: Admin, store: Store, queue: Queue, tmp_path: Any
) -> None:
    source = tmp_path / "questions.csv"
    source.write_text("custom_id,question,team\n" + "".join(f"c{n},{QUESTIONS[n]},ops\n" for n in range(4)))
    emu.script({"status": 400, "count": 1})  # the first answer attempt is rejected
    code, out = _cli(["batch", "submit", str(source), "--idempotency-key", "nightly-1"])
    assert code == EXIT_OK
    batch_id = out.split()[0]
    code, out = _cli(["batch", "wait", batch_id, "--interval", "0.2", "--timeout", "60"])
    assert code == EXIT_FAILURES and "4/4" in out
    again_code, again = _cli(["batch", "submit", str(source), "--idempotency-key", "nightly-1"])
    assert again_code == EXIT_OK and again.split()[0] == batch_id and "nothing enqueued" in again

    code, out = _cli(["batch", "retry", batch_id])
    assert (code, out.strip()) == (EXIT_OK, "re-enqueued 1 failed requests")
    code, _ = _cli(["batch", "wait", batch_id, "--interval", "0.2", "--timeout", "60"])
    assert code == EXIT_OK
    assert emu.count("chat_completions") == 5  # 4 + the one retried

    code, out = _cli(["batch", "results", batch_id, "--format", "jsonl"])
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["custom_id"] for line in lines] == ["c0", "c1", "c2", "c3"]
    assert {line["status"] for line in lines} == {"succeeded"}
    assert max(line["attempts"] for line in lines) == 2
    output = tmp_path / "results.csv"
    code, _ = _cli(["batch", "results", batch_id, "--format", "csv", "-o", str(output)])
    assert code == EXIT_OK and output.read_text().splitlines()[0].startswith("custom_id,request_id,status")
    code, out = _cli(["batch", "status", batch_id, "--json"])
    status = json.loads(out)
    assert status["counts"]["succeeded"] == 4 and status["total"] == 4


def test_cli_cancel_stops_pending_requests(stack: LocalStack, emu: Admin, store: Store, queue: Queue) -> None:
    assert stack.poller is not None
    stack.poller.handler, real = (
        (lambda event, context: {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}),
        stack.poller.handler,
    )
    try:
        batch_id = submit(store, queue, jsonl(6, "cancel"))
        code, out = _cli(["batch", "cancel", batch_id])
        assert (code, out.split()[:2]) == (EXIT_OK, ["cancelled", "6"])
    finally:
        stack.poller.handler = real
    wait_until(drained(queue), what="cancelled messages consumed")
    counts = assert_counts_sum(store, batch_id)
    assert counts["cancelled"] == 6
    assert emu.count("chat_completions") == 0


def test_the_printed_exports_are_all_a_shell_needs_to_run_the_cli_against_the_stack(
    stack: LocalStack, store: Store, tmp_path: Any
) -> None:
    # A newcomer pastes what `python -m infra.local` prints into a new shell: every command must then work,
    # the ones that reach SQS (served by a moto process of its own) included.
    import subprocess
    import sys

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for line in stack.exports().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
    assert {"AWS_ENDPOINT_URL_SQS", "CITEQ_STREAM_URL", "CITEQ_WEBHOOK_URL"} <= set(env)
    source = tmp_path / "q.jsonl"
    source.write_text(json.dumps({"custom_id": "pasted", "question": QUESTIONS[0]}) + "\n")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from citeq.cli import main; sys.exit(main(sys.argv[1:]))", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    batch_id = cli("batch", "submit", str(source), "--wait").split()[0]
    assert "succeeded 1" in cli("batch", "status", batch_id)
    assert "examined" in cli("sweep", "--dry-run")
    cli("dlq", "show", "--json")
