"""DynamoDB and SQS requests per answered question through the local pipeline (issue 9's benchmark).

Every boto3 client of the pipeline gets a ``before-call`` hook that counts its calls by operation: the
submitter, the dispatcher (the table's stream -> SQS), the worker, and the pollers standing in for Lambda's
event source mappings (their SQS receives and deletes are billed like any other). Printed next to the
figures is the previous design's count, stated rather than measured (that code is gone): per question two
TransactWriteItems of three items each (the request, the batch counter and the Powertools idempotency
record: put in progress with the claim, updated to completed with the answer), the message sent by the
submitter. Nothing here asserts a number of calls or a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from citeq import batch
from citeq.store import Store
from infra.local import LocalStack
from tests.bench.figures import Figures
from tests.helpers import ASSISTANT

QUESTIONS = 100
QUESTION = "What does a request over the rate limit receive?"
# The previous design, per question (see the module docstring).
BEFORE = {"transactions": 2.0, "transaction_items": 6.0}


def _wait(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the pipeline did not finish"
        time.sleep(0.05)


class _Missing:
    done = False


info_missing = _Missing()


class Calls:
    """Counts calls per (component, operation) on the clients it is attached to."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.items: Counter[str] = Counter()  # items written inside the worker's transactions, by target status
        self.sends: Counter[str] = Counter()  # messages sent, by component
        self.services: dict[str, Counter[str]] = {"dynamodb": Counter(), "sqs": Counter()}
        self._lock = threading.Lock()

    def attach(self, component: str, client: Any) -> None:
        def count(model: Any, params: dict[str, Any], **_: Any) -> None:
            body = json.loads(params.get("body") or b"{}")
            with self._lock:
                self.calls[(component, model.name)] += 1
                self.services[service][component] += 1
                if model.name == "TransactWriteItems":
                    update = body["TransactItems"][0]["Update"]
                    to = update["ExpressionAttributeValues"][":to"]["S"]
                    self.calls[(component, f"TransactWriteItems -> {to}")] += 1
                    self.items[to] += len(body["TransactItems"])
                if model.name == "SendMessageBatch":
                    self.sends[component] += len(body["Entries"])

        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-call.{service}", count, unique_id=f"bench-count-{component}")


def test_dynamodb_and_sqs_requests_per_answered_question(figures: Figures) -> None:
    with LocalStack(plan=None, latency="none", reconcile_every=3600) as stack:
        assert stack.poller and stack.stream_poller and stack.callback_poller
        store = Store(stack.table)
        calls = Calls()
        calls.attach("submit", store.client)
        calls.attach("dispatcher", stack.dispatcher.requests.client)
        calls.attach("worker", stack.worker.store.client)
        calls.attach("worker", stack.worker.queue.client)
        calls.attach("SQS trigger", stack.poller.sqs)
        invocations = {"stream": stack.stream_poller.stats.invocations, "worker": stack.poller.stats.invocations}
        text = "\n".join(json.dumps({"custom_id": f"q{n}", "question": QUESTION}) for n in range(QUESTIONS))
        batch_id = batch.submit(batch.parse(text, fmt="jsonl", default_assistant=ASSISTANT), store=store).batch_id
        poller = stack.poller
        watcher = Store(stack.table)  # the bench's own reads, not counted
        _wait(lambda: (watcher.get_batch(batch_id) or info_missing).done)
        # The last batch's deletes go out after the worker returns: let them finish before reading the counts.
        _wait(lambda: poller.stats.deleted >= QUESTIONS)
        info = watcher.get_batch(batch_id)
        assert info is not None and info.counts["succeeded"] == QUESTIONS
        invocations = {
            "stream": stack.stream_poller.stats.invocations - invocations["stream"],
            "worker": stack.poller.stats.invocations - invocations["worker"],
        }
        worker_calls = sorted((op, n) for (component, op), n in calls.calls.items())
        snapshot = dict(calls.calls)
    per = QUESTIONS
    lines = [f"\n[requests per answered question] {QUESTIONS} questions through the local pipeline, no faults"]
    lines.append(f"  {'component':<12} {'call':<36} {'calls':>6} {'per question':>13}")
    for (component, operation), count in sorted(snapshot.items()):
        lines.append(f"  {component:<12} {operation:<36} {count:>6} {count / per:>13.2f}")
    dynamodb = sum(calls.services["dynamodb"].values())
    sqs = sum(calls.services["sqs"].values())
    transactions = sum(n for (c, op), n in snapshot.items() if c == "worker" and op == "TransactWriteItems") / per
    items = sum(calls.items.values()) / per
    lines += [
        f"  in all: {dynamodb / per:.2f} DynamoDB and {sqs / per:.2f} SQS requests per question (the trigger's "
        "receives include its empty long polls)",
        f"  messages sent by the dispatcher: {calls.sends['dispatcher'] / per:.2f} per question "
        f"({snapshot.get(('dispatcher', 'SendMessageBatch'), 0)} SendMessageBatch calls); stream invocations "
        f"{invocations['stream']}, worker invocations {invocations['worker']}",
        f"  worker transactions (claim + answer): {transactions:.2f} per question, {items:.2f} items in them; "
        f"before (previous design, stated): {BEFORE['transactions']:.0f} transactions, "
        f"{BEFORE['transaction_items']:.0f} items (+ the Powertools idempotency record's put and update)",
        f"  ratio now/before: transactions {transactions / BEFORE['transactions']:.2f}, transactional item writes "
        f"{items / BEFORE['transaction_items']:.2f}",
    ]
    assert worker_calls  # something was counted
    print("\n".join(lines))
    before = "previous design (stated, not measured)"
    figures.add(f"DynamoDB / SQS requests per answered question ({QUESTIONS})",
                f"{dynamodb / per:.2f} / {sqs / per:.2f}", "", None, "the cost model's counts")
    figures.add("worker transactions per answered question", f"{transactions:.2f}",
                f"{BEFORE['transactions']:.0f}, {before}", transactions / BEFORE["transactions"],
                "no more than before")
    figures.add("transactional item writes per answered question", f"{items:.2f}",
                f"{BEFORE['transaction_items']:.0f}, {before}", items / BEFORE["transaction_items"],
                "fewer than before")
