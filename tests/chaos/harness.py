"""The machinery of the chaos run: what goes wrong, decided by seeded RNGs, and what the run counts.

- ``AwsFaults``: botocore event hooks on a component's own clients. Before the call, a write fails the way
  AWS reports one it did not apply (``ProvisionedThroughputExceededException``, ``InternalServerError``, a
  connection error); after the call, a write that *was* applied is reported as failed (a 500, a read timeout).
- ``Deaths``: the worker's invocations, wrapped as Lambda would run them: some die before doing anything (the
  whole invocation, or one record: the event source sees the record unanswered), some die after the assistant
  answered but before the result is written (``Killed`` ends the thread as a dead process would, skipping every
  ``except Exception``); doomed requests die on every delivery, some of them only after the assistant answered
  on the message's last one. Some messages are delivered a second time, while the first delivery runs or after.
- ``CallbackReceiver``: a webhook receiver on 127.0.0.1 counting distinct ``webhook-id`` values per request.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
SQS_SENDS = ("SendMessage", "SendMessageBatch")


class Killed(BaseException):
    """The invocation's process died: nothing after this point runs (not even ``except Exception``)."""


class InvocationKilled(RuntimeError):
    """What the event source sees of a dead invocation: no response at all."""


def _client_error(code: str, operation: str, status: int) -> ClientError:
    body = {
        "Error": {"Code": code, "Message": "injected by the chaos test"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(body, operation)  # type: ignore[arg-type]


def _result_write(operation: str, request: dict[str, Any]) -> str | None:
    """The request id when this is the write that stores an answer (the request's update to ``succeeded``);
    ``request`` is botocore's serialized request (the JSON body holds the call's parameters)."""
    try:
        params = json.loads(request.get("body") or b"{}")
    except ValueError:
        return None
    if operation == "TransactWriteItems":
        updates = [a.get("Update", {}) for a in params.get("TransactItems", [])]
    elif operation == "UpdateItem":
        updates = [params]
    else:
        return None
    for update in updates:
        pk = str(update.get("Key", {}).get("pk", {}).get("S", ""))
        if pk.startswith("REQ#") and update.get("ExpressionAttributeValues", {}).get(":to") == {"S": "succeeded"}:
            return pk.removeprefix("REQ#")
    return None


@dataclass
class AwsFaults:
    """Injected AWS write failures, counted by kind."""

    rng: random.Random
    before_rate: float
    after_rate: float
    counts: Counter[str] = field(default_factory=Counter)
    # Results the assistant had answered that a failed write kept out of the table (the answer is asked again).
    lost_results: int = 0
    lost: Counter[str] = field(default_factory=Counter)  # request id -> result writes that failed
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any, service: str) -> None:
        """Hook every write of ``service`` made through ``client`` (and only that client)."""
        for operation in DYNAMODB_WRITES if service == "dynamodb" else SQS_SENDS:
            client.meta.events.register(f"before-call.{service}.{operation}", self._before)
            client.meta.events.register(f"after-call.{service}.{operation}", self._after)

    def _draw(self, rate: float) -> float | None:
        with self._lock:
            draw = self.rng.random()
        return draw / rate if draw < rate else None

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        share = self._draw(self.before_rate)
        if share is None:
            return
        operation, service = model.name, model.service_model.service_name
        with self._lock:
            self.counts[f"{service} {operation} not applied"] += 1
            request_id = _result_write(operation, params)
            if request_id is not None:
                self.lost_results += 1
                self.lost[request_id] += 1
        if share < 0.4:
            code = "ProvisionedThroughputExceededException" if service == "dynamodb" else "RequestThrottled"
            raise _client_error(code, operation, 400)
        if share < 0.8:
            raise _client_error("InternalServerError" if service == "dynamodb" else "InternalError", operation, 500)
        raise EndpointConnectionError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com")

    def _after(self, model: Any, **_: Any) -> None:
        share = self._draw(self.after_rate)
        if share is None:
            return
        operation, service = model.name, model.service_model.service_name
        with self._lock:
            self.counts[f"{service} {operation} applied, reported failed"] += 1
        if share < 0.5:
            raise _client_error("InternalServerError" if service == "dynamodb" else "InternalError", operation, 500)
        raise ReadTimeoutError(endpoint_url=f"https://{service}.us-east-1.amazonaws.com")


class ChattingClient:
    """The worker's assistant client, dying after some answers (before the worker can write them)."""

    def __init__(self, client: Any, decide: Callable[[list[dict[str, Any]]], bool]) -> None:
        self.client = client
        self.decide = decide

    def chat(self, request: Any, **kwargs: Any) -> Any:
        """Ask the assistant; maybe die holding the answer."""
        answer = self.client.chat(request, **kwargs)
        if self.decide([m.to_dict() for m in request.messages]):
            raise Killed("died after the assistant answered")
        return answer


@dataclass
class Deaths:
    """Kills and duplicate deliveries around the worker's handler."""

    rng: random.Random
    send_copy: Callable[[str], None]
    max_receives: int
    # question text -> request kind: "doomed" (dies before anything on every delivery) or "doomed-last" (dies
    # before anything until the last delivery, then after the assistant answered).
    doomed: dict[str, str]
    question_of: dict[str, str]  # request id -> question text
    kill_invocation: float = 0.02
    kill_record: float = 0.01
    kill_after_answer: float = 0.02
    duplicate: float = 0.05
    counts: Counter[str] = field(default_factory=Counter)
    post_answer_deaths: int = 0
    # Per question: answers the worker received, and how many of them died with it.
    answers: Counter[str] = field(default_factory=Counter)
    died: Counter[str] = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _random(self) -> float:
        with self._lock:
            return self.rng.random()

    def after_answer(self, messages: list[dict[str, Any]]) -> bool:
        """Whether the record holding this answer dies now."""
        question = str(messages[-1]["content"])
        die = self.doomed.get(question) == "doomed-last" or self._random() < self.kill_after_answer
        with self._lock:
            self.answers[question] += 1
        if die:
            with self._lock:
                self.died[question] += 1
                self.post_answer_deaths += 1
                self.counts["died after the answer"] += 1
        return die

    def wrap(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        """The worker's handler as the chaos run invokes it."""

        def invoke(event: dict[str, Any], context: Any) -> Any:
            records = event["Records"]
            later: list[str] = []
            for record in records:
                body = record["body"]
                with self._lock:
                    first = body not in self._seen
                    self._seen.add(body)
                if first and self._random() < self.duplicate:
                    if self._random() < 0.5:
                        self.send_copy(body)  # while this delivery runs
                        self.counts["duplicate during"] += 1
                    else:
                        later.append(body)
            try:
                if self._random() < self.kill_invocation:
                    self.counts["invocation died before anything"] += 1
                    raise InvocationKilled("died before doing anything")
                kept, killed = [], []
                for record in records:
                    question = self.question_of.get(json.loads(record["body"]).get("request_id", ""), "")
                    kind = self.doomed.get(question)
                    receives = int(record["attributes"]["ApproximateReceiveCount"])
                    if (
                        kind == "doomed"
                        or (kind == "doomed-last" and receives < self.max_receives)
                        or self._random() < self.kill_record
                    ):
                        self.counts["record died before anything"] += 1
                        killed.append(record["messageId"])
                    else:
                        kept.append(record)
                response = handler({**event, "Records": kept}, context) if kept else {"batchItemFailures": []}
                failures = list((response or {}).get("batchItemFailures", []))
                return {"batchItemFailures": failures + [{"itemIdentifier": m} for m in killed]}
            except Killed as exc:
                raise InvocationKilled(str(exc)) from None
            finally:
                for body in later:  # after the first delivery ended
                    self.send_copy(body)
                    self.counts["duplicate after"] += 1

        return invoke


class CallbackReceiver:
    """Counts callbacks by request id and webhook id; answers 204."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request_id = str(json.loads(body).get("request_id"))
                with receiver._lock:
                    receiver.posts += 1
                    receiver.ids[request_id].add(self.headers.get("webhook-id", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
