"""Pipeline speed and memory: one invocation of 10 records, 1,000 questions at concurrency C, import cost,
and peak RSS of a 10-record batch with 50 KB answers. Figures are printed as ratios to baselines measured in
the same run; nothing here asserts a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from citeq import batch
from citeq.config import Settings
from citeq.models import ChatRequest, Request
from citeq.store import Store
from infra.local import LocalStack
from infra.local.context import LambdaContext
from tests.bench.figures import Figures
from tests.helpers import ASSISTANT, ROOT, Admin, load_event

QUESTION = "What does a request over the rate limit receive?"


def _records(store: Store, queue_url: str, count: int, prefix: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    template = load_event("sqs-request.json")["Records"][0]
    records = []
    for n in range(count):
        request_id = f"{prefix}-{n}"
        store.put_request(Request(request_id, ChatRequest.ask(QUESTION, ASSISTANT)))
        body = json.dumps(
            {
                "v": 1,
                "request_id": request_id,
                "assistant": ASSISTANT,
                "messages": [{"role": "user", "content": QUESTION}],
            }
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        message = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"][0]
        records.append(
            {**template, "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": body}
        )
    return records


@pytest.fixture
def handler(worker_env: dict[str, str]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The worker's handler as deployed, built from this test's environment."""
    from worker import app

    return app.deployed(Settings.from_env())


def test_one_invocation_of_10_records_costs_about_one_answer(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]], worker_env: dict[str, str], admin: Admin, figures: Figures
) -> None:
    admin.faults(latency_ms=300)
    store = Store(worker_env["CITEQ_TABLE"])
    timings = {}
    for size in (1, 10):
        records = _records(store, worker_env["CITEQ_QUEUE_URL"], size, f"bench{size}")
        start = time.perf_counter()
        response = handler({"Records": records}, LambdaContext())
        timings[size] = time.perf_counter() - start
        assert response == {"batchItemFailures": []}
    print(
        f"\n[worker] emulator at 300 ms/answer: 1 record {timings[1] * 1000:.0f} ms, 10 records "
        f"{timings[10] * 1000:.0f} ms -> {timings[10] / timings[1]:.2f}x one answer (target <= 1.5)"
    )
    figures.add("one worker invocation, 10 records, 300 ms answers", f"{timings[10] * 1000:.0f} ms",
                f"1 record {timings[1] * 1000:.0f} ms", timings[10] / timings[1], "<= 1.5")


# 5 invocations is template.yaml's default MaximumConcurrency.
@pytest.mark.parametrize("invocations", [2, 4, 5])
def test_1000_questions_through_the_local_pipeline_at_concurrency_c(invocations: int, figures: Figures) -> None:
    batch_size = 5  # template.yaml's default BatchSize
    concurrency = invocations * batch_size
    with LocalStack(max_concurrency=invocations, plan=None, latency="none") as stack:
        assert stack.emulator is not None
        Admin(stack.emulator.url).faults(latency_ms=300)
        store = Store(stack.table)
        text = "\n".join(json.dumps({"custom_id": f"q{n}", "question": QUESTION}) for n in range(1000))
        parsed = batch.parse(text, fmt="jsonl", default_assistant=ASSISTANT)
        submitted = time.perf_counter()
        batch_id = batch.submit(parsed, store=store).batch_id
        enqueue = time.perf_counter() - submitted
        first = None
        while True:
            info = store.get_batch(batch_id)
            assert info is not None
            if first is None and info.finished:
                first = time.perf_counter()
            if info.done:
                break
            time.sleep(0.05)  # the finish time is known to within 50 ms
        elapsed = time.perf_counter() - submitted
        assert info.counts["succeeded"] == 1000
    ideal = concurrency / 0.3
    rate = 1000 / elapsed
    print(
        f"\n[pipeline] 1000 questions, emulator 300 ms/answer, C = {invocations} invocations x {batch_size} records "
        f"= {concurrency}: {elapsed:.1f} s (submit {enqueue:.1f} s) -> {rate:.1f} answers/s = "
        f"{rate / ideal * 100:.0f}% of the ideal C/0.3 s = {ideal:.1f}/s (target >= 80%)"
    )
    figures.add(f"1,000 questions through the pipeline, C = {concurrency}", f"{rate:.1f} answers/s",
                f"ideal C / 0.3 s = {ideal:.1f}/s", rate / ideal, ">= 0.8")


def _fresh_import_seconds(module: str) -> float:
    env = {
        **os.environ,
        "CITEQ_TABLE": "t",
        "CITEQ_QUEUE_URL": "http://127.0.0.1:9/q",
        "PINECONE_API_KEY": "k",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
        )
        for _ in range(5)
    ]
    return min(runs)


def test_importing_the_worker_module_against_import_boto3(figures: Figures) -> None:
    boto = _fresh_import_seconds("boto3")
    worker = _fresh_import_seconds("worker.app")
    print(
        f"\n[import] fresh interpreter, best of 5: import boto3 {boto * 1000:.0f} ms, import worker.app "
        f"{worker * 1000:.0f} ms -> {worker / boto:.2f}x (target <= 2)"
    )
    figures.add("importing worker.app", f"{worker * 1000:.0f} ms", f"import boto3 {boto * 1000:.0f} ms", worker / boto,
                "<= 2")


MEMORY_CHILD = r"""
import json, os, sys

def hwm_kb():
    # VmHWM is this process's own peak RSS (ru_maxrss would include the parent's, inherited at fork).
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

import boto3
from infra.local.template import create_resources, load, local_resources
from infra.local.context import LambdaContext
if True:  # moto runs in another process (AWS_ENDPOINT_URL): this process holds only the worker
    res = create_resources(local_resources(load()), cloudformation=boto3.client("cloudformation"),
                           dynamodb=boto3.client("dynamodb"), stack_name="mem")
    os.environ.update(CITEQ_TABLE=res["ResultsTable"],
                      CITEQ_QUEUE_URL=res["RequestsQueue"])
    import worker.app as app
    from citeq.models import ChatRequest, Request
    from citeq.store import Store
    store = Store(res["ResultsTable"])
    sqs = boto3.client("sqs")
    records = []
    for n in range(10):
        question = "What does a request over the rate limit receive?"
        body = json.dumps({"v": 1, "request_id": f"m{n}", "assistant": "bench",
                           "messages": [{"role": "user", "content": question}]})
        store.put_request(Request(f"m{n}", ChatRequest.ask("q", "bench")))
        sqs.send_message(QueueUrl=res["RequestsQueue"], MessageBody=body)
        m = sqs.receive_message(QueueUrl=res["RequestsQueue"])["Messages"][0]
        records.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": body,
                        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0", "SenderId": "x",
                                       "ApproximateFirstReceiveTimestamp": "0"}, "messageAttributes": {},
                        "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
                        "awsRegion": "us-east-1"})
    before = hwm_kb()
    assert app.lambda_handler({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
    answer = store.get("m0").answer
    print(json.dumps({"before_kb": before, "peak_kb": hwm_kb(), "answer_bytes": len(json.dumps(answer)),
                      "text_bytes": len(answer["message"]["content"])}))
"""


def test_batch_of_10_with_50kb_answers_peak_rss(figures: Figures) -> None:
    from tests.bench.emulator_process import API_KEY, emulator_process

    moto = subprocess.Popen(
        [sys.executable, "-m", "infra.local.moto_process"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert moto.stdout is not None
    endpoint = moto.stdout.readline().strip()
    # Each repeat adds ~300 characters of text and three citations with signed URLs (~6.5 KB of answer JSON):
    # 8 repeats make answer objects of about 50 KB.
    with emulator_process("--answer-repeat", "8") as url:
        env = {
            **os.environ,
            "PINECONE_API_KEY": API_KEY,
            "CITEQ_PINECONE_HOST": url,
            "CITEQ_ASSISTANT": "bench",
            "POWERTOOLS_METRICS_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
        }
        env["AWS_ENDPOINT_URL"] = endpoint
        try:
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD],
                env=env,
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
                timeout=120,
            ).stdout
        finally:
            moto.terminate()
            moto.wait(10)
    figures_ = json.loads(out.strip().splitlines()[-1])
    probe = (
        "import boto3\nfor line in open('/proc/self/status'):\n    if line.startswith('VmHWM:'): print(line.split()[1])"
    )
    baseline = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    print(
        f"\n[memory] 10 records with {figures_['answer_bytes'] / 1000:.0f} KB answer objects "
        f"({figures_['text_bytes'] / 1000:.1f} KB of text each): peak RSS "
        f"{figures_['peak_kb'] / 1024:.0f} MB (target < 150 MB; {figures_['before_kb'] / 1024:.0f} MB before the "
        f"invocation); a bare `import boto3` process peaks at "
        f"{int(baseline) / 1024:.0f} MB"
    )
    figures.add("10 records with ~50 KB answers, peak RSS", f"{figures_['peak_kb'] / 1024:.0f} MB",
                f"import boto3 {int(baseline) / 1024:.0f} MB", figures_['peak_kb'] / int(baseline), "< 150 MB")
