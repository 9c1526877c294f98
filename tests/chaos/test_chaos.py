"""Chaos: the whole local stack answering a batch while everything that can fail does (issue 14).

Faults (seeded): the assistant answers ~10% 429 (half with Retry-After), 5% 5xx, drops 2% of connections
and holds a token-per-minute limit that citeq paces to; 5% of messages are delivered twice (during or after
the first delivery); invocations and records die before doing anything, records die after the assistant
answered and before the write, doomed requests die on every delivery (some after the answer on the
message's last one); the components' own DynamoDB writes and SQS sends fail, applied or not.

After the run drains (the reconciler run until nothing changes), citeq's promises hold: every request
ended succeeded or failed with a reason, the batch counters equal the items, the assistant's successful
calls are the succeeded requests plus the answers lost to injected deaths and failed result writes, every
DLQ message is a failed request with its reason, and every callback owed arrived under one webhook id.

``make test`` runs 300 questions, ``make chaos`` 2,000 (``CITEQ_CHAOS_SIZE``, 0 skips it; ``CITEQ_CHAOS_SEED``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Iterator

import boto3
import pytest

from citeq import batch, dlq
from citeq.budget import TokenBudget
from citeq.config import Settings
from citeq.queue import Queue
from citeq.store import Store
from infra.local import LocalStack
from tests.chaos.harness import AwsFaults, CallbackReceiver, ChattingClient, Deaths
from tests.helpers import ASSISTANT, QUESTIONS, Admin

# Issue 14: about 300 questions inside ``make test``; ``make chaos`` asks for 2,000.
SIZE = int(os.environ.get("CITEQ_CHAOS_SIZE", "300"))
pytestmark = pytest.mark.skipif(SIZE <= 0, reason="CITEQ_CHAOS_SIZE=0")
SEED = int(os.environ.get("CITEQ_CHAOS_SEED", "14"))
# A 4-second token window (emulator and citeq alike) holding ~48 calls of ~1.3k prompt tokens. The random 429s
# come isolated, so the pacer puts off only the refused request (citeq.budget.CONFIRM) and the limit binds.
WINDOW_SECONDS = 4
TOKENS_PER_WINDOW = 64_000
# The worker's timeout (and so each attempt's lease) and the queue's visibility timeout, cut from 120 / 750 s.
TIMEOUT_SECONDS = 8
VISIBILITY_SECONDS = 9


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Injected deaths are logged by the poller with tracebacks by design; keep them out of the output."""
    names = ["infra.local.poller", "infra.local.stream_poller", "citeq", "citeq-worker", "citeq-callback"]
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _depth_zero(queue: Queue, url: str) -> bool:
    return all(v == 0 for v in queue.depth(url).values())


def test_chaos_every_request_ends_once_with_counters_dlq_and_callbacks_in_agreement(quiet_logs: None) -> None:
    rng = random.Random(SEED)
    texts = [f"{QUESTIONS[n % len(QUESTIONS)]} (case {n})" for n in range(SIZE)]
    doomed_ids = rng.sample(range(SIZE), max(2, SIZE // 100))
    doomed = {texts[n]: ("doomed" if i % 2 == 0 else "doomed-last") for i, n in enumerate(doomed_ids)}
    with (
        CallbackReceiver() as receiver,
        LocalStack(
            visibility_timeout=VISIBILITY_SECONDS,
            max_concurrency=4,
            plan="standard",
            tokens_per_minute=TOKENS_PER_WINDOW,
            context_tokens=(900, 1100),
            latency="none",
            reconcile_every=3600,
            worker_env={"CITEQ_TOKEN_WINDOW_SECONDS": str(WINDOW_SECONDS)},
        ) as stack,
    ):
        assert stack.emulator is not None and stack.poller is not None and stack.stream_poller is not None
        assert stack.callback is not None
        emu = Admin(stack.emulator.url)
        emu.plan(window_seconds=WINDOW_SECONDS)
        emu.faults(rate_429=0.10, retry_after=1, retry_after_rate=0.5, rate_500=0.025, rate_503=0.025,
                   rate_drop=0.02, seed=SEED)
        settings = Settings.from_env()
        clean_sqs = boto3.client("sqs")
        # The callback queue's visibility timeout too (template: 180 s), so a delivery whose record failed
        # (its bookkeeping write was made to fail) comes back within the run.
        clean_sqs.set_queue_attributes(
            QueueUrl=stack.resources["CallbackQueue"], Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)}
        )
        aws = AwsFaults(random.Random(SEED + 1), before_rate=0.03, after_rate=0.01)
        question_of: dict[str, str] = {}
        deaths = Deaths(
            random.Random(SEED + 2),
            send_copy=lambda body: clean_sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body),
            max_receives=settings.max_receives,
            doomed=doomed,
            question_of=question_of,
        )

        # The components, built as Lambda builds them, with the faults attached to their own clients.
        from dispatcher import app as dispatcher_app

        from worker import app as worker_app

        worker = worker_app.build(settings)
        worker.client = ChattingClient(worker.client, deaths.after_answer)  # type: ignore[assignment]
        aws.attach(worker.store.client, "dynamodb")
        stack.poller.handler = deaths.wrap(worker_app.handler_for(worker, settings.worker_concurrency))
        stack.poller.timeout = TIMEOUT_SECONDS
        dispatcher = dispatcher_app.build(settings)
        aws.attach(dispatcher.requests.client, "sqs")
        assert dispatcher.callbacks is not None
        aws.attach(dispatcher.callbacks.client, "sqs")
        stack.stream_poller.handler = dispatcher_app.handler_for(dispatcher)
        aws.attach(stack.callback.store.client, "dynamodb")

        store, queue = Store(stack.table), Queue(stack.queue_url, dlq_url=stack.dlq_url)
        lines = [
            json.dumps(
                {"custom_id": f"c-{n}", "question": text, **({"callback_url": receiver.url} if n % 5 == 0 else {})}
            )
            for n, text in enumerate(texts)
        ]
        started = time.monotonic()
        parsed = batch.parse("\n".join(lines), fmt="jsonl", default_assistant=ASSISTANT,
                             callback_allow_hosts=["127.0.0.1"])
        batch_id = batch.submit(parsed, store=store).batch_id
        for item in store.iter_batch(batch_id):
            question_of[item.request_id] = item.chat.messages[-1].content

        # Drain: until every request ended, every queue is empty and the callbacks owed arrived, three checks
        # in a row, the reconciler run on each (bounded in time: a hang is a failure with the state printed).
        deadline = started + 600 + SIZE * 0.5
        reconciled, stable, state = 0, 0, {}
        callback_url = stack.resources["CallbackQueue"]
        while stable < 3:
            if time.monotonic() > deadline:
                left = store.iter_batch(batch_id)
                reasons = Counter((i.status, str((i.error or {}).get("message"))[:80]) for i in left)
                raise AssertionError(f"the run did not drain: {state}; {reasons.most_common(8)}")
            time.sleep(1.0)
            reconciled += stack.reconcile()
            info = store.get_batch(batch_id)
            assert info is not None
            state = {"counters": info.counts, "queue": queue.depth(), "callbacks": queue.depth(callback_url)}
            busy = info.counts["queued"] + info.counts["running"]
            owed = 0
            if not busy:
                owed = sum(
                    1 for i in store.iter_batch(batch_id)
                    if i.callback_url and i.status in ("succeeded", "failed") and i.request_id not in receiver.ids
                )
            quiet = busy == 0 and owed == 0 and _depth_zero(queue, stack.queue_url)
            quiet = quiet and _depth_zero(queue, callback_url) and stack.wait_dispatched(1.0)
            stable = stable + 1 if quiet else 0
            if int(time.monotonic() - started) % 15 == 0:
                print(f"  {time.monotonic() - started:.0f} s: {state}, callbacks owed {owed}", flush=True)
        elapsed = time.monotonic() - started

        items = list(store.iter_batch(batch_id))
        info = store.get_batch(batch_id)
        assert info is not None
        statuses = Counter(i.status for i in items)
        reasons = Counter(str((i.error or {}).get("type")) for i in items if i.status == "failed")
        counters = emu.counters().get("chat_completions", {}).get(ASSISTANT, {})
        answered = int(counters.get("200", 0)) - int(counters.get("dropped", 0))
        letters = dlq.show(store=store, queue=queue, limit=1000)
        owed_callbacks = {i.request_id for i in items if i.callback_url}
        once = sum(1 for rid in owed_callbacks if len(receiver.ids.get(rid, set())) == 1)

        budget = TokenBudget(store, TOKENS_PER_WINDOW, window=WINDOW_SECONDS).read(ASSISTANT)
        cut = "none" if budget.cut_rate is None else f"last to {budget.cut_rate:,.0f} tokens per window"
        nonzero = {k: v for k, v in info.counts.items() if v}
        failed_letters = sum(1 for x in letters if x.row()["status"] == "failed")
        print(
            f"\n[chaos] {SIZE} questions, seed {SEED}, drained in {elapsed:.0f} s"
            f"\n  requests: {dict(statuses)}; failed by reason: {dict(reasons)}"
            f"\n  batch counters: {info.counts} (items agree: {dict(statuses) == nonzero})"
            f"\n  assistant: {counters}; answers received = 200 - dropped = {answered}"
            f"\n    = succeeded {statuses['succeeded']} + died after the answer {deaths.post_answer_deaths}"
            f" + result writes that failed {aws.lost_results}"
            f"\n  pacing: {budget.throttles} 429s seen by the budget, rate cut: {cut}"
            f"\n  deaths and duplicates: {dict(deaths.counts)}"
            f"\n  AWS writes failed: {sum(aws.counts.values())} ({dict(aws.counts)})"
            f"\n  DLQ: {len(letters)} messages, {failed_letters} map to failed"
            f" requests with a reason; reconciler failed {reconciled}"
            f"\n  callbacks: {len(owed_callbacks)} owed, {once} delivered under one webhook id, "
            f"{receiver.posts} POSTs, {len(set(receiver.ids) - owed_callbacks)} unexpected"
        )

        twice = {
            i.custom_id: (deaths.answers[q], deaths.died[q], aws.lost[i.request_id], i.status, i.attempts, i.failures)
            for i in items
            for q in [i.chat.messages[-1].content]
            if deaths.answers[q] - deaths.died[q] - aws.lost[i.request_id] > (1 if i.status == "succeeded" else 0)
        }
        print(f"  answered more often than deaths and lost writes explain (answers, died, lost, status, ...): {twice}")
        assert len(items) == SIZE
        assert set(statuses) <= {"succeeded", "failed"}, statuses
        assert all(i.error and i.error.get("message") for i in items if i.status == "failed")
        assert {k: v for k, v in info.counts.items() if v} == dict(statuses)
        assert sum(info.counts.values()) == info.total == SIZE
        assert answered == statuses["succeeded"] + deaths.post_answer_deaths + aws.lost_results
        for letter in letters:
            row = letter.row()
            assert row["status"] == "failed" and row["reason"], row
        assert set(receiver.ids) == owed_callbacks
        assert once == len(owed_callbacks)
        # Every doomed request failed, and the chaos really happened.
        by_text = {i.chat.messages[-1].content: i for i in items}
        assert all(by_text[text].status == "failed" for text in doomed)
        assert statuses["succeeded"] > 0 and deaths.post_answer_deaths > 0 and sum(aws.counts.values()) > 0
        assert int(counters.get("429", 0)) > 0 and int(counters.get("dropped", 0)) > 0
