"""Issue 9's proof: a failure at every write/send boundary of the pipeline, on the whole local stack.

Each row kills one component at one boundary — just before or just after one DynamoDB write, SQS send,
assistant call or callback delivery — and then lets the stack run on. Every row must end the same way:

- the request answered once (the emulator served one successful chat per request; two when the death came
  after the assistant answered and before the answer was stored), or failed with its reason;
- its callback delivered once per generation (a receiver on 127.0.0.1 counts distinct webhook-ids; a
  repeated POST of the same id is what Standard Webhooks receivers drop);
- batch counters equal to the items' statuses, nothing queued or running, both queues empty.

A death is ``Died``, a BaseException: no ``except Exception`` in the code under test can handle it, so
nothing after the injection point runs, as when a process dies. It is raised from a botocore event hook on
the client of the component that dies (``before-call`` / ``after-call`` of one operation, matched on the
request body), from the worker's HTTP transport, or by the submitting process. The pollers' handlers are
wrapped once so that a death ends the invocation with an error, which is what Lambda sees when a function
crashes: an SQS batch stays on its queue (back after its visibility timeout), a stream batch is retried.

Its own package, so its stack (short visibility timeouts and worker timeout) never runs beside tests/e2e's.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from citeq import batch, dlq
from citeq.models import STATUSES, RequestRecord
from citeq.queue import Queue
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import ASSISTANT, Admin

QUESTION = "What does a request over the rate limit receive?"
# The worker's timeout, so the lease a dead attempt leaves ends soon (the template's is 120 s). At least 6 s:
# the call deadline keeps 3 s back for the write, and an assistant call needs 2 s.
WORKER_TIMEOUT = 6
BATCH_ID = re.compile(r"b_[0-9a-f]{19}")


class Died(BaseException):
    """The component died here (not an Exception: nothing in the code under test may handle it)."""


# ---------------------------------------------------------------------------------------------- the rig
class Receiver:
    """A callback receiver on 127.0.0.1 recording each POST's webhook-id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.ids.append(self.headers.get("webhook-id", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, batch_id: str) -> list[str]:
        """Every webhook-id POSTed for a batch's requests (repeats included)."""
        with self._lock:
            return [i for i in self.ids if i.startswith(batch_id)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Fault:
    """One death at a botocore boundary: ``before`` or ``after`` an ``operation`` of ``client`` whose request
    body ``match``es, after letting ``skip`` matching calls through."""

    client: Any
    operation: str
    when: str
    match: Callable[[dict[str, Any]], bool]
    skip: int = 0
    times: int = 1
    error: Callable[[str], BaseException] = Died
    fired: int = 0
    batch_id: str = ""  # the batch named in the request that died
    _seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _event(self, phase: str) -> str:
        return f"{phase}-call.{self.client.meta.service_model.service_id.hyphenize()}.{self.operation}"

    def install(self) -> Fault:
        self.client.meta.events.register(self._event("before"), self._before, unique_id=f"fault-b-{id(self)}")
        self.client.meta.events.register(self._event("after"), self._after, unique_id=f"fault-a-{id(self)}")
        return self

    def remove(self) -> None:
        self.client.meta.events.unregister(self._event("before"), unique_id=f"fault-b-{id(self)}")
        self.client.meta.events.unregister(self._event("after"), unique_id=f"fault-a-{id(self)}")

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        body = json.loads(params.get("body") or b"{}")
        if not self.match(body):
            return
        with self._lock:
            self._seen += 1
            if not self.skip < self._seen <= self.skip + self.times:
                return
            self.fired += 1
            named = BATCH_ID.search(json.dumps(body))
            self.batch_id = named.group(0) if named else ""
        if self.when == "before":
            raise self.error(f"died before {self.operation}")
        context["citeq_fault"] = id(self)  # the write goes ahead; die once it is done

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        if context.get("citeq_fault") == id(self):
            del context["citeq_fault"]
            raise self.error(f"died after {self.operation}")


class DyingTransport(requests.adapters.BaseAdapter):
    """The worker's HTTP transport, dying once just before a chat call is sent or just after it answered 200."""

    def __init__(self, real: requests.adapters.BaseAdapter, when: str) -> None:
        super().__init__()
        self.real = real
        self.when = when
        self.fired = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        chat = "/chat/completions" in (request.url or "") and not self.fired
        if chat and self.when == "before":
            self.fired += 1
            raise Died("died before the assistant call")
        response = self.real.send(request, **kwargs)
        if chat and response.status_code == 200:
            self.fired += 1
            response.close()
            raise Died("died after the assistant answered")
        return response

    def close(self) -> None:
        self.real.close()


def survives_deaths(handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
    """The pollers' view of a function that died: the invocation failed (nothing reported, nothing deleted)."""

    def invoke(event: dict[str, Any], context: Any) -> Any:
        try:
            return handler(event, context)
        except Died as died:
            raise RuntimeError(f"the invocation died: {died}") from None

    return invoke


@dataclass
class Rig:
    """The stack and what a row needs to hurt it and to check it."""

    stack: LocalStack
    emu: Admin
    store: Store
    queue: Queue
    receiver: Receiver
    faults: list[Fault] = field(default_factory=list)
    transports: list[DyingTransport] = field(default_factory=list)

    # -------------------------------------------------------------- the components' clients
    @property
    def worker_store(self) -> Any:
        return self.stack.worker.store.client

    @property
    def worker_queue(self) -> Any:
        return self.stack.worker.queue.client

    @property
    def dispatch_requests(self) -> Any:
        return self.stack.dispatcher.requests.client

    @property
    def dispatch_callbacks(self) -> Any:
        return self.stack.dispatcher.callbacks.client

    @property
    def callback_store(self) -> Any:
        assert self.stack.callback is not None
        return self.stack.callback.store.client

    def fault(
        self, client: Any, operation: str, when: str, match: Callable[[dict[str, Any]], bool], **kw: Any
    ) -> Fault:
        fault = Fault(client, operation, when, match, **kw).install()
        self.faults.append(fault)
        return fault

    def dying_assistant(self, when: str) -> DyingTransport:
        session = self.stack.worker.client.session
        transport = DyingTransport(session.get_adapter("http://"), when)
        session.mount("http://", transport)
        self.transports.append(transport)
        return transport

    def heal(self) -> None:
        for fault in self.faults:
            fault.remove()
        session = self.stack.worker.client.session
        for transport in self.transports:
            session.mount("http://", transport.real)
        self.faults.clear()
        self.transports.clear()

    # -------------------------------------------------------------- driving and checking
    def submit(self, count: int = 1, **line: Any) -> str:
        parsed = self.parse(count, **line)
        return batch.submit(parsed, store=self.store).batch_id

    def parse(self, count: int = 1, **line: Any) -> batch.Parsed:
        prefix = secrets.token_hex(3)  # a new input each time: an unfinished one would be resumed instead
        text = "\n".join(
            json.dumps({"custom_id": f"{prefix}-{n}", "question": QUESTION, "callback_url": self.receiver.url, **line})
            for n in range(count)
        )
        return batch.parse(text, fmt="jsonl", default_assistant=ASSISTANT, callback_allow_hosts=("127.0.0.1",))

    def depths(self) -> list[dict[str, int]]:
        return [self.queue.depth(), self.queue.depth(self.stack.resources["CallbackQueue"])]

    def settled(self, batch_id: str) -> bool:
        info = self.store.get_batch(batch_id)
        if info is None or info.state != "submitted" or not info.done:
            return False
        items = list(self.store.iter_batch(batch_id))
        if any(i.status in ("queued", "running") for i in items):
            return False
        if any(i.callback_url and i.callback_done != i.generation for i in items):
            return False
        return all(d == {"visible": 0, "in_flight": 0, "delayed": 0} for d in self.depths())

    def wait_settled(self, batch_id: str, timeout: float = 90.0) -> list[RequestRecord]:
        wait_until(lambda: self.settled(batch_id), timeout, f"batch {batch_id} to settle")
        assert self.stack.wait_dispatched()
        return list(self.store.iter_batch(batch_id))

    def check(
        self, batch_id: str, *, status: str, answers: int, reason: str | None = None, posts: int | None = None
    ) -> list[RequestRecord]:
        """The row's end state: every request ``status`` (with ``reason``), ``answers`` successful chats, each
        generation's callback delivered (in ``posts`` POSTs when given), counters exact, nothing queued or
        running."""
        items = self.wait_settled(batch_id)
        assert [i.status for i in items] == [status] * len(items)
        if reason is not None:
            assert all(i.error is not None and reason in i.error["message"] for i in items), [i.error for i in items]
        assert self.emu.count("chat_completions", status="200") == answers
        delivered = self.receiver.received(batch_id)
        assert set(delivered) == {f"{i.request_id}.{g}" for i in items for g in range(i.generation + 1)}
        if posts is not None:
            assert len(delivered) == posts
        info = self.store.get_batch(batch_id)
        assert info is not None
        by_status = dict.fromkeys(STATUSES, 0)
        for item in items:
            by_status[item.status] += 1
        assert info.counts == by_status and info.total == len(items)
        # Nothing is left owed. A copy of a message sent late (the change stream delivers at least once) may
        # still pass through after the settle, finding its request ended: it must be consumed, not stick.
        wait_until(lambda: self.depths() == [{"visible": 0, "in_flight": 0, "delayed": 0}] * 2, 30, "queues empty")
        assert [i.status for i in self.store.iter_batch(batch_id)] == [status] * len(items)
        assert self.emu.count("chat_completions", status="200") == answers
        for fault in self.faults:
            assert fault.fired == fault.times, f"{fault.operation} ({fault.when}) fired {fault.fired} times"
        for transport in self.transports:
            assert transport.fired == 1, f"the assistant transport ({transport.when}) never fired"
        return items


def wait_until(check: Callable[[], bool], timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # Short visibility timeouts so a dead invocation's messages come back within seconds, and the shortest
    # worker timeout (the lease) the call deadline allows: a dead attempt's request is taken over in ~7 s.
    with LocalStack(
        visibility_timeout=3,
        callback_visibility_timeout=2,
        worker_timeout=WORKER_TIMEOUT,
        max_concurrency=2,
        plan=None,
        latency="none",
        reconcile_every=3600,
    ) as local:
        assert local.poller and local.callback_poller and local.stream_poller
        for poller in (local.poller, local.callback_poller, local.stream_poller):
            poller.handler = survives_deaths(poller.handler)
        yield local


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def rig(stack: LocalStack, receiver: Receiver) -> Iterator[Rig]:
    assert stack.emulator is not None
    admin = Admin(stack.emulator.url)
    admin.reset()
    rig = Rig(stack, admin, Store(stack.table), Queue(stack.queue_url, dlq_url=stack.dlq_url), receiver)
    try:
        yield rig
    finally:
        rig.heal()
        # A failed row may leave work behind: let it finish (or give up) before the next row counts anything.
        idle = [{"visible": 0, "in_flight": 0, "delayed": 0}] * 2
        with contextlib.suppress(AssertionError):
            wait_until(lambda: stack.wait_dispatched() and rig.depths() == idle, 60, "the queues to empty")
        rig.queue.delete_letters(rig.queue.dead_letters())
        admin.reset()


# ---------------------------------------------------------------------------------------------- matchers
def _update(body: dict[str, Any]) -> dict[str, Any]:
    items = body.get("TransactItems") or [{"Update": body}]
    return dict(items[0].get("Update") or {})


def moves(to: str, *, frm: str | None = None, dispatch: bool | None = None) -> Callable[[dict[str, Any]], bool]:
    """A status change of a request to ``to`` (from ``frm``; writing a new dispatch token or not)."""

    def match(body: dict[str, Any]) -> bool:
        update = _update(body)
        values = update.get("ExpressionAttributeValues", {})
        if values.get(":to", {}).get("S") != to or (frm is not None and values.get(":from", {}).get("S") != frm):
            return False
        return dispatch is None or ("dispatch" in update.get("ExpressionAttributeNames", {}).values()) == dispatch

    return match


def writes_callback_done(body: dict[str, Any]) -> bool:
    return "callback_done" in str(body.get("UpdateExpression", ""))


def anything(body: dict[str, Any]) -> bool:
    return True


def batch_record(body: dict[str, Any]) -> bool:
    return body.get("Item", {}).get("sk", {}).get("S") == "META"


def input_bound(body: dict[str, Any]) -> bool:
    return body.get("Item", {}).get("sk", {}).get("S") == "IDEM"


def marks_submitted(body: dict[str, Any]) -> bool:
    return body.get("ExpressionAttributeValues", {}).get(":s", {}).get("S") == "submitted"


# ---------------------------------------------------------------------------------------------- one request
@dataclass(frozen=True)
class Row:
    """One failure point on the way of a single request, and how that request must end."""

    id: str
    hurt: Callable[[Rig], object]
    answers: int = 1
    status: str = "succeeded"
    reason: str | None = None
    line: dict[str, Any] = field(default_factory=dict)
    # POSTs the receiver gets (None: one or two, when two callback jobs for the request may run at once).
    posts: int | None = 1


# A 503 three times: the client's in-process attempts (Retry-After 0 keeps them quick) all fail, so the worker
# puts the request back to queued (requeue) and hands its message back.
UNAVAILABLE = {"status": 503, "retry_after": 0, "count": 3}
# A 429: the worker defers the request under a new dispatch token (the stream sends a delayed message).
RATE_LIMITED = {"status": 429, "retry_after": 1}
# The service refuses the model on every attempt: the request fails with that reason.
BAD_MODEL = {"model": "gpt-99"}


def _scripted(rig: Rig, *entries: dict[str, Any]) -> None:
    rig.emu.script(*entries)


def _refused(message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ServiceUnavailable", "Message": message}}, "SendMessageBatch")


# What each row would catch if its protection went (reasoned; the dispatch rows were also tried by removal):
# - a running request whose lease ended must be taken over (claim-after, assistant-*, succeed-before,
#   fail-before, requeue-before, defer-before): without it the request stays running and the row times out;
# - a claim must find the request queued (succeed-after, fail-after, hand-back-*, dispatch-send-after): without
#   it the redelivered or duplicated message asks the assistant again and ``answers`` is off by one;
# - a failed send must be retried from its stream record (dispatch-*, callback-queue-*, dispatch-send-refused,
#   which goes through the dispatcher's partial batch response rather than a crash): without it nothing is
#   ever queued and the row times out;
# - a delivered callback's generation must be recorded and checked (callback-done-after: ``posts`` would be 2),
#   and a repeated delivery must keep its webhook-id (callback-done-before: two distinct ids);
# - defer-after is the weakest: the superseded message comes back after the new one has answered, so it is
#   dropped for the request's status as much as for its token (store.claim's token condition is what guards
#   an old message arriving first; tests/unit/worker covers it).


ROWS = [
    # The worker's claim. Before: nothing written, the message simply comes back. After: the request is running
    # under a lease nobody holds; the next delivery waits for the lease to end, then takes over.
    Row(
        "claim-before",
        lambda r: r.fault(r.worker_store, "TransactWriteItems", "before", moves("running", frm="queued")),
    ),
    Row(
        "claim-after", lambda r: r.fault(r.worker_store, "TransactWriteItems", "after", moves("running", frm="queued"))
    ),
    # The assistant call. Before: as claim-after (a lease, no answer). After: the assistant answered and the
    # answer was lost with the process; the takeover asks again, so the service served two answers.
    Row("assistant-before", lambda r: r.dying_assistant("before")),
    Row("assistant-after", lambda r: r.dying_assistant("after"), answers=2),
    # The answer write. Before: as assistant-after. After: stored; the redelivery finds it ended and skips it.
    Row(
        "succeed-before",
        lambda r: r.fault(r.worker_store, "TransactWriteItems", "before", moves("succeeded")),
        answers=2,
    ),
    Row("succeed-after", lambda r: r.fault(r.worker_store, "TransactWriteItems", "after", moves("succeeded"))),
    # A permanent failure's write (the service refuses the model every time).
    Row(
        "fail-before",
        lambda r: r.fault(r.worker_store, "TransactWriteItems", "before", moves("failed")),
        answers=0,
        status="failed",
        reason="Invalid model",
        line=BAD_MODEL,
    ),
    Row(
        "fail-after",
        lambda r: r.fault(r.worker_store, "TransactWriteItems", "after", moves("failed")),
        answers=0,
        status="failed",
        reason="Invalid model",
        line=BAD_MODEL,
    ),
    # A retryable failure's write (back to queued, same message) and the hand-back that delays the message.
    Row(
        "requeue-before",
        lambda r: (
            _scripted(r, UNAVAILABLE),
            r.fault(r.worker_store, "TransactWriteItems", "before", moves("queued", dispatch=False)),
        ),
    ),
    Row(
        "requeue-after",
        lambda r: (
            _scripted(r, UNAVAILABLE),
            r.fault(r.worker_store, "TransactWriteItems", "after", moves("queued", dispatch=False)),
        ),
    ),
    Row(
        "hand-back-before",
        lambda r: (_scripted(r, UNAVAILABLE), r.fault(r.worker_queue, "ChangeMessageVisibility", "before", anything)),
    ),
    Row(
        "hand-back-after",
        lambda r: (_scripted(r, UNAVAILABLE), r.fault(r.worker_queue, "ChangeMessageVisibility", "after", anything)),
    ),
    # A deferral's write (a 429: back to queued under a new dispatch token). After: the old message comes back
    # superseded and is dropped; the new one answers.
    Row(
        "defer-before",
        lambda r: (
            _scripted(r, RATE_LIMITED),
            r.fault(r.worker_store, "TransactWriteItems", "before", moves("queued", dispatch=True)),
        ),
    ),
    Row(
        "defer-after",
        lambda r: (
            _scripted(r, RATE_LIMITED),
            r.fault(r.worker_store, "TransactWriteItems", "after", moves("queued", dispatch=True)),
        ),
    ),
    # Not a death: an unexpected exception (a bug) just before the answer write. The worker releases the lease
    # (the request goes back to queued) so the next delivery asks again at once.
    Row(
        "unexpected-error-at-answer",
        lambda r: r.fault(r.worker_store, "TransactWriteItems", "before", moves("succeeded"), error=RuntimeError),
        answers=2,
    ),
    # The SQS trigger's delete of a finished message is lost (Lambda's side): it comes back and is skipped.
    Row("trigger-delete-lost", lambda r: r.fault(r.stack.poller.sqs, "DeleteMessageBatch", "before", anything)),
    # The dispatcher's send of the request's message. Before: the stream batch is retried and sends it. After:
    # sent, then retried and sent again; the duplicate finds the request claimed or ended.
    Row("dispatch-send-before", lambda r: r.fault(r.dispatch_requests, "SendMessageBatch", "before", anything)),
    Row("dispatch-send-after", lambda r: r.fault(r.dispatch_requests, "SendMessageBatch", "after", anything)),
    # Not a death: SQS refuses every attempt of one invocation (the queue client's six), so the dispatcher names
    # the record in its partial batch response and the stream trigger retries from it.
    Row(
        "dispatch-send-refused",
        lambda r: r.fault(r.dispatch_requests, "SendMessageBatch", "before", anything, times=6, error=_refused),
    ),
    # The dispatcher's send of the callback job.
    Row("callback-queue-before", lambda r: r.fault(r.dispatch_callbacks, "SendMessageBatch", "before", anything)),
    Row(
        "callback-queue-after",
        lambda r: r.fault(r.dispatch_callbacks, "SendMessageBatch", "after", anything),
        posts=None,
    ),
    # The callback function: before it delivers (its first read), after the POST but before recording it
    # (delivered again with the same webhook-id), after recording it (the redelivery posts nothing).
    Row("callback-deliver-before", lambda r: r.fault(r.callback_store, "GetItem", "before", anything)),
    Row(
        "callback-done-before",
        lambda r: r.fault(r.callback_store, "UpdateItem", "before", writes_callback_done),
        posts=2,
    ),
    Row("callback-done-after", lambda r: r.fault(r.callback_store, "UpdateItem", "after", writes_callback_done)),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_death_at_one_boundary_still_ends_the_request_once(rig: Rig, row: Row) -> None:
    row.hurt(rig)
    batch_id = rig.submit(**row.line)
    rig.check(batch_id, status=row.status, answers=row.answers, reason=row.reason, posts=row.posts)


# ---------------------------------------------------------------------------------------------- last delivery
@pytest.mark.parametrize(
    "when", ["before", "after"], ids=["last-delivery-dies-before-claim", "last-delivery-dies-after-claim"]
)
def test_a_death_on_the_last_delivery_is_reconciled_from_the_dlq(rig: Rig, when: str) -> None:
    # Five deliveries fail (three 503s each) and hand the message back; the sixth, its last, dies at its claim.
    # SQS then moves the message to the DLQ: only the reconciler can end the request.
    rig.emu.script({**UNAVAILABLE, "count": 15})
    rig.fault(rig.worker_store, "TransactWriteItems", when, moves("running", frm="queued"), skip=5)
    batch_id = rig.submit()
    wait_until(lambda: rig.queue.depth(rig.stack.dlq_url)["visible"] == 1, what="the message in the DLQ")
    (item,) = rig.store.iter_batch(batch_id)
    assert item.status == ("queued" if when == "before" else "running")
    # After the claim, the reconciler leaves the request alone until the dead attempt's lease has ended.
    wait_until(lambda: rig.stack.reconcile() == 1, timeout=30, what="the reconciler to fail the request")
    items = rig.check(batch_id, status="failed", answers=0, reason="delivery abandoned after 6 receives: last error: ")
    assert items[0].error is not None and items[0].error["http_status"] == 503  # the last recorded error's
    assert rig.stack.reconcile() == 0
    letters = dlq.show(store=rig.store, queue=rig.queue)
    assert [letter.row()["status"] for letter in letters] == ["failed"]
    rig.queue.delete_letters(rig.queue.dead_letters())


# ---------------------------------------------------------------------------------------------- submit, retry
SUBMIT_ROWS = [
    # (id, operation, when, match, skip, idempotency key)
    ("submit-after-input-bound", "PutItem", "after", input_bound, 0, None),
    ("submit-with-key-after-key-bound", "PutItem", "after", input_bound, 0, "k"),
    ("submit-after-batch-record", "PutItem", "after", batch_record, 0, None),
    ("submit-half-way", "BatchWriteItem", "before", anything, 1, None),
    ("submit-before-marked-submitted", "UpdateItem", "before", marks_submitted, 0, None),
    ("submit-with-key-after-marked-submitted", "UpdateItem", "after", marks_submitted, 0, "nightly"),
]


@pytest.mark.parametrize(
    ("operation", "when", "match", "skip", "key"), [r[1:] for r in SUBMIT_ROWS], ids=[r[0] for r in SUBMIT_ROWS]
)
def test_an_interrupted_submit_is_finished_by_running_it_again(
    rig: Rig, operation: str, when: str, match: Callable[[dict[str, Any]], bool], skip: int, key: str | None
) -> None:
    total = 30  # two BatchWriteItem calls (25 + 5), sent in parallel
    parsed = rig.parse(total)
    fault = rig.fault(rig.store.client, operation, when, match, skip=skip)
    key = f"{key}-{secrets.token_hex(3)}" if key else None
    with pytest.raises(Died):
        batch.submit(parsed, store=rig.store, idempotency_key=key)
    fault.remove()
    batch_id = fault.batch_id  # the batch the interrupted submission was writing
    stored = sum(1 for _ in rig.store.iter_batch(batch_id))
    if operation == "BatchWriteItem":
        assert 0 < stored < total  # really half way: some requests stored (and being answered), some not
    again = batch.submit(parsed, store=rig.store, idempotency_key=key)
    if operation == "PutItem" and match is input_bound and key is None:
        # Died before its batch record: nothing of that batch exists, so the input is bound to a new one.
        assert rig.store.get_batch(batch_id) is None and stored == 0
        batch_id = again.batch_id
    assert again.batch_id == batch_id  # the interrupted batch finished, not a second one begun
    rig.check(batch_id, status="succeeded", answers=total)


def test_an_interrupted_batch_retry_is_finished_by_running_it_again(rig: Rig) -> None:
    # Four requests fail (the service refuses each once); a retry dies just after resetting the second.
    rig.emu.script({"status": 400, "count": 4})
    batch_id = rig.submit(4)
    failed = rig.check(batch_id, status="failed", answers=0)
    assert all(item.error is not None and item.error["http_status"] == 400 for item in failed)
    fault = rig.fault(rig.store.client, "TransactWriteItems", "after", moves("queued", frm="failed"), skip=1)
    with pytest.raises(Died):
        batch.retry_failed(batch_id, store=rig.store)
    fault.remove()
    generations = sorted(item.generation for item in rig.store.iter_batch(batch_id))
    assert generations == [0, 0, 1, 1]  # two were reset before the death
    assert batch.retry_failed(batch_id, store=rig.store) == 2  # the rest, and only the rest
    items = rig.check(batch_id, status="succeeded", answers=4)
    assert [item.generation for item in items] == [1, 1, 1, 1]  # each callback: one failed, one answered


def test_a_webhook_whose_message_send_dies_is_still_answered_once(rig: Rig) -> None:
    # The case: the request is stored, the send dies, the sender retries its webhook (same id) and is
    # told it is a duplicate. The stream still owes the message, so the request is answered all the same.
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    assert rig.stack.webhook is not None
    fault = rig.fault(rig.dispatch_requests, "SendMessageBatch", "before", anything)
    url = f"{rig.stack.webhook.url}/v1/webhooks"
    body = json.dumps({"question": QUESTION, "callback_url": rig.receiver.url, "custom_id": "hooked"})
    msg_id = f"msg_{secrets.token_hex(6)}"
    signature = Webhook(rig.stack.webhook_secrets[0]).sign(msg_id, datetime.now(UTC), body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(time.time())), "webhook-signature": signature}
    first = requests.post(url, data=body, headers=headers, timeout=10).json()
    again = requests.post(url, data=body, headers=headers, timeout=10).json()
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    request_id = first["request_id"]

    def done() -> bool:
        item = rig.store.get(request_id)
        idle = all(d == {"visible": 0, "in_flight": 0, "delayed": 0} for d in rig.depths())
        return item is not None and item.status == "succeeded" and item.callback_done == 0 and idle

    wait_until(done, what="the webhook's request answered and its callback delivered")
    assert fault.fired == 1
    assert rig.emu.count("chat_completions", status="200") == 1
    assert rig.receiver.received(request_id) == [f"{request_id}.0"]


# ---------------------------------------------------------------------------------------------- lost messages
def test_requests_whose_messages_were_lost_are_swept_and_answered_once(rig: Rig) -> None:
    # Messages lost after the send (a purge, a delete by hand, a copy acknowledged by mistake): only the
    # reconciler's sweep can find their requests, once the queue has nothing visible.
    import boto3
    from reconciler.app import handler_for

    from infra.local.context import LambdaContext

    rig.stack.stop_worker()
    try:
        batch_id = rig.submit(3)
        wait_until(lambda: rig.queue.depth()["visible"] == 3, what="the three messages sent")
        boto3.client("sqs").purge_queue(QueueUrl=rig.stack.queue_url)
        wait_until(lambda: rig.queue.depth()["visible"] == 0, what="the messages gone")
        sweep = handler_for(rig.store, rig.queue, 6, stranded_after=1.0)
        time.sleep(1.1)
        swept = sweep({"sweep": True}, LambdaContext(timeout_seconds=60))["swept"]
        assert (swept["skipped"], swept["redispatched"], swept["failed"]) == (None, 3, 0)
    finally:
        rig.stack.start_worker(survives_deaths(rig.stack.worker_handler))  # type: ignore[arg-type]
    items = rig.check(batch_id, status="succeeded", answers=3, posts=3)
    assert all(item.attempts == 1 for item in items)
    # Answered: nothing is open any more, so the next sweep finds nothing to send.
    assert sweep({"sweep": True}, LambdaContext(timeout_seconds=60))["swept"]["redispatched"] == 0
