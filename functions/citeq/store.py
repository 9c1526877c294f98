"""DynamoDB store of requests, their answers and batch counters (one table; design in README).

Keys (``pk``/``sk``) and two indexes: ``gsi1`` (projection ALL) lists a batch's requests in order; ``open``
(sparse, keys only) lists the requests not yet ended, in 16 shards, for the sweep (``citeq.sweep``):

    request     pk=REQ#<request_id>   sk=REQ    gsi1pk=BATCH#<batch_id>  gsi1sk=<seq, 8 digits>
                                                open_shard=OPEN#<0-f>    (only while queued or running)
    batch       pk=BATCH#<batch_id>   sk=META   (total, state, c_<status> counters)
    idem key    pk=IDEM#<key>         sk=IDEM   (batch_id)

Every status change is one TransactWriteItems: the request's update, conditioned on the status it is
leaving (and, for a running request, on the lease of the attempt making the change), plus the batch
counters moved by one. So counters always sum to the total, and no older attempt overwrites a newer one.

The request item is the one source of truth for exactly-once (issue 9). Its state machine::

    queued ──claim──► running ──succeed──► succeeded
      ▲  ▲              │ │ └──fail──────► failed ──reset──► queued (new generation)
      │  └──requeue─────┘ └──defer───────► queued (new dispatch token, not_before)
      └──defer (new dispatch token, not_before)          cancelled ◄──cancel── queued

- A claim sets ``lease`` (a token) and ``lease_until`` (epoch seconds, the invocation's deadline); a running
  request whose lease has ended may be claimed again (its attempt died). Results are conditional on the lease.
- ``dispatch`` names the SQS message a queued request is owed. Writing a new token *is* the enqueue: the
  table's stream drives ``citeq.dispatch``, which sends a message for each new token (after ``not_before``).
  A claim must carry the current token, so a superseded message does nothing.
- A request that ends with a ``callback`` owes a callback job, sent the same way when its status becomes
  terminal; ``callback_done`` (the generation delivered) makes the delivery take effect once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from citeq import aws
from citeq.errors import ItemTooLarge, StoreError
from citeq.models import (
    STATUSES,
    TERMINAL,
    BatchInfo,
    ChatOptions,
    ChatRequest,
    Message,
    Request,
    RequestRecord,
    Unfinished,
)

# DynamoDB items are at most 400 KB; keep headroom for keys, names and the error.
ITEM_BUDGET = 390_000
# Answers larger than this (as JSON) are stored gzip-compressed.
COMPRESS_ABOVE = 100_000
GSI = "gsi1"
# Sparse: only queued and running requests carry ``open_shard``. Sixteen shards keep a large batch's inserts
# from all landing on one index partition.
OPEN_INDEX = "open"
OPEN_SHARDS = tuple(f"OPEN#{digit:x}" for digit in range(16))


def open_shard(request_id: str) -> str:
    """The ``open`` index shard a request is listed under while it is not ended."""
    return OPEN_SHARDS[hashlib.sha256(request_id.encode()).digest()[0] % len(OPEN_SHARDS)]


Attr = dict[str, Any]


def dynamodb_client() -> Any:
    """A DynamoDB client with standard retries and a pool for concurrent records."""
    return aws.client("dynamodb")


def now_iso(ts: float) -> str:
    """RFC 3339, milliseconds, UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _s(value: str) -> Attr:
    return {"S": value}


def _n(value: float) -> Attr:
    return {"N": str(value)}


def _j(value: Any) -> Attr:
    return {"S": json.dumps(value, separators=(",", ":"))}


def _j_input(value: Any) -> Attr:
    """A request's input as stored: UTF-8 as is, so it takes the bytes ``Request.input_bytes`` counts (escaped,
    a CJK character took 6 bytes instead of 3, and a request inside the limits could pass DynamoDB's 400 KB item
    with its answer). Safe because every entrance refused lone surrogates (``citeq.text.check_text``)."""
    return {"S": json.dumps(value, separators=(",", ":"), ensure_ascii=False)}


def _get_s(item: dict[str, Attr], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


def _get_n(item: dict[str, Attr], name: str) -> int | None:
    value = item.get(name)
    return int(float(value["N"])) if value and "N" in value else None


def _get_f(item: dict[str, Attr], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def _get_j(item: dict[str, Attr], name: str) -> Any:
    raw = _get_s(item, name)
    return json.loads(raw) if raw is not None else None


def new_token() -> str:
    """A random token naming one lease or one owed message."""
    return secrets.token_hex(8)


def record_from_item(item: dict[str, Attr]) -> RequestRecord:
    """A stored request (its DynamoDB item, or a stream image of it) -> a RequestRecord."""
    answer = None
    if "answer_gz" in item:
        answer = json.loads(gzip.decompress(item["answer_gz"]["B"]))
    elif "answer" in item:
        answer = _get_j(item, "answer")
    callback = _get_j(item, "callback")
    chat = ChatRequest(
        _get_s(item, "assistant") or "",
        tuple(Message(m.get("role", "user"), m.get("content", "")) for m in _get_j(item, "messages") or ()),
        ChatOptions.stored(_get_j(item, "options")),
    )
    return RequestRecord(
        request_id=_get_s(item, "request_id") or "",
        chat=chat,
        batch_id=_get_s(item, "batch_id"),
        custom_id=_get_s(item, "custom_id"),
        seq=_get_n(item, "seq"),
        metadata=_get_j(item, "metadata"),
        callback_url=callback.get("url") if isinstance(callback, dict) else None,
        caller=_get_s(item, "caller"),
        status=_get_s(item, "status") or "queued",
        attempts=_get_n(item, "attempts") or 0,
        lease=_get_s(item, "lease"),
        created_at=_get_s(item, "created_at"),
        updated_at=_get_s(item, "updated_at"),
        started_at=_get_s(item, "started_at"),
        finished_at=_get_s(item, "finished_at"),
        latency_ms=_get_n(item, "latency_ms"),
        answer=answer,
        error=_get_j(item, "error"),
        deliveries=[json.loads(d["S"]) for d in item.get("deliveries", {}).get("L", [])],
        generation=_get_n(item, "generation") or 0,
        lease_until=_get_f(item, "lease_until"),
        dispatch=_get_s(item, "dispatch"),
        not_before=_get_f(item, "not_before"),
        wait_reason=_get_s(item, "wait_reason"),
        failures=_get_n(item, "failures") or 0,
        deferrals=_get_n(item, "deferrals") or 0,
        callback_done=_get_n(item, "callback_done"),
    )


def _answer_attrs(answer: dict[str, Any], budget: int) -> dict[str, Attr]:
    """The answer as a JSON string, or gzip-compressed when large; ItemTooLarge when even that won't fit."""
    raw = json.dumps(answer, separators=(",", ":")).encode()
    if len(raw) <= min(COMPRESS_ABOVE, budget):
        return {"answer": {"S": raw.decode()}}
    packed = gzip.compress(raw, compresslevel=6)
    if len(packed) > budget:
        raise ItemTooLarge(
            f"answer is {len(raw)} bytes ({len(packed)} compressed); more than the {budget} bytes a DynamoDB "
            "item has left for it"
        )
    return {"answer_gz": {"B": packed}}


class Store:
    """Owns every DynamoDB call; ``ClientError`` never leaves this class."""

    def __init__(
        self,
        table: str,
        *,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        ttl_days: int = 30,
    ) -> None:
        self.table = table
        self._client = client
        self.clock = clock
        self.sleep = sleep
        self.ttl_seconds = ttl_days * 86400

    @property
    def client(self) -> Any:
        """The DynamoDB client, made on first use (building one costs ~70 ms; a cold start may not need it)."""
        if self._client is None:
            self._client = dynamodb_client()
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        return aws.call(self.client, "dynamodb", operation, **kwargs)

    def _conditional(self, operation: str, **kwargs: Any) -> bool:
        return aws.conditional(self.client, "dynamodb", operation, TableName=self.table, **kwargs)

    def _expires(self) -> Attr:
        return _n(int(self.clock()) + self.ttl_seconds)

    # ------------------------------------------------------------------ batches
    def claim_idempotency_key(self, key: str, batch_id: str) -> str:
        """Bind ``key`` to ``batch_id``; if it was bound before, return that earlier batch id."""
        item = {"pk": _s(f"IDEM#{key}"), "sk": _s("IDEM"), "batch_id": _s(batch_id), "expires_at": self._expires()}
        if self._conditional("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)"):
            return batch_id
        found = self._call(
            "get_item", TableName=self.table, Key={"pk": _s(f"IDEM#{key}"), "sk": _s("IDEM")}, ConsistentRead=True
        )
        return str(found["Item"]["batch_id"]["S"])

    def release_idempotency_key(self, key: str, batch_id: str) -> None:
        """Unbind ``key`` if it still names ``batch_id`` (a finished submission's automatic key)."""
        self._conditional(
            "delete_item",
            Key={"pk": _s(f"IDEM#{key}"), "sk": _s("IDEM")},
            ConditionExpression="batch_id = :b",
            ExpressionAttributeValues={":b": _s(batch_id)},
        )

    def create_batch(self, batch_id: str, total: int, *, source: str | None, idempotency_key: str | None) -> None:
        """Write the batch record with every request counted as queued."""
        ts = self.clock()
        item: dict[str, Attr] = {
            "pk": _s(f"BATCH#{batch_id}"),
            "sk": _s("META"),
            "batch_id": _s(batch_id),
            "total": _n(total),
            "state": _s("submitting"),
            "created_at": _s(now_iso(ts)),
            "created_ts": _n(ts),
            "expires_at": self._expires(),
            **{f"c_{status}": _n(total if status == "queued" else 0) for status in STATUSES},
        }
        if source:
            item["source"] = _s(source)
        if idempotency_key:
            item["idempotency_key"] = _s(idempotency_key)
        self._call("put_item", TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")

    def mark_batch_submitted(self, batch_id: str) -> None:
        """Every request of the batch has been sent to the queue."""
        self._call(
            "update_item",
            TableName=self.table,
            Key={"pk": _s(f"BATCH#{batch_id}"), "sk": _s("META")},
            UpdateExpression="SET #st = :s",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues={":s": _s("submitted")},
        )

    def get_batch(self, batch_id: str) -> BatchInfo | None:
        """A batch's record and counters (strongly consistent)."""
        found = self._call(
            "get_item", TableName=self.table, Key={"pk": _s(f"BATCH#{batch_id}"), "sk": _s("META")}, ConsistentRead=True
        )
        item = found.get("Item")
        if not item:
            return None
        return BatchInfo(
            batch_id=batch_id,
            total=_get_n(item, "total") or 0,
            counts={status: _get_n(item, f"c_{status}") or 0 for status in STATUSES},
            state=_get_s(item, "state") or "submitted",
            created_at=_get_s(item, "created_at") or "",
            created_ts=float(item["created_ts"]["N"]),
            source=_get_s(item, "source"),
            idempotency_key=_get_s(item, "idempotency_key"),
        )

    # ------------------------------------------------------------------ requests
    def _request_item(self, request: Request, ts: float, dispatch: str | None = None) -> dict[str, Attr]:
        item: dict[str, Attr] = {
            "pk": _s(f"REQ#{request.request_id}"),
            "sk": _s("REQ"),
            "request_id": _s(request.request_id),
            "status": _s("queued"),
            "assistant": _s(request.chat.assistant),
            "messages": _j_input([m.to_dict() for m in request.chat.messages]),
            "options": _j_input(request.chat.options.to_dict()),
            "attempts": _n(0),
            # The message this new request is owed: the stream dispatcher sends it (the write is the enqueue).
            "dispatch": _s(dispatch or new_token()),
            "created_at": _s(now_iso(ts)),
            "updated_at": _s(now_iso(ts)),
            "expires_at": self._expires(),
            "open_shard": _s(open_shard(request.request_id)),
        }
        if request.batch_id is not None and request.seq is not None:
            item["batch_id"] = _s(request.batch_id)
            item["seq"] = _n(request.seq)
            item["gsi1pk"] = _s(f"BATCH#{request.batch_id}")
            item["gsi1sk"] = _s(f"{request.seq:08d}")
        if request.custom_id is not None:
            item["custom_id"] = _s(request.custom_id)
        if request.metadata is not None:  # {} is kept as {}: what the caller sent comes back
            item["metadata"] = _j_input(request.metadata)
        if request.callback_url:
            item["callback"] = _j_input({"url": request.callback_url})
        if request.caller:
            item["caller"] = _s(request.caller)
        return item

    def put_request(self, request: Request, *, dispatch: str | None = None) -> bool:
        """Store one queued request (which also enqueues it, through the stream, as message ``dispatch`` when
        given); False if that request id exists already (nothing changed)."""
        return self._put_new(self._request_item(request, self.clock(), dispatch))

    def put_failed(self, request: Request, error: dict[str, Any]) -> bool:
        """Store a request that ended before it began (a malformed message kept with its reason): it owes
        nothing. False if that request id exists already."""
        ts = self.clock()
        item = self._request_item(request, ts)
        del item["dispatch"], item["open_shard"]
        item.update({"status": _s("failed"), "error": _j(error), "finished_at": _s(now_iso(ts))})
        return self._put_new(item)

    def _put_new(self, item: dict[str, Attr]) -> bool:
        return self._conditional("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")

    def put_requests(self, requests: Sequence[Request], *, workers: int = 8) -> int:
        """Store queued requests that do not exist yet (BatchWriteItem, 25 a call, in parallel); returns how many
        were written. Existing ones are left as they are, so a resumed submission never enqueues twice."""
        existing = self.existing(r.request_id for r in requests)
        ts = self.clock()
        items = [self._request_item(r, ts) for r in requests if r.request_id not in existing]
        chunks = [items[i : i + 25] for i in range(0, len(items), 25)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self._write_chunk, chunks))
        return len(items)

    def _write_chunk(self, items: list[dict[str, Attr]]) -> None:
        pending: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in items]
        for attempt in range(8):
            if not pending:
                return
            result = self._call("batch_write_item", RequestItems={self.table: pending})
            pending = result.get("UnprocessedItems", {}).get(self.table, [])
            if pending:
                self.sleep(min(2.0, 0.05 * 2**attempt))
        raise StoreError(f"DynamoDB kept {len(pending)} writes unprocessed")

    def existing(self, request_ids: Iterator[str] | Sequence[str]) -> set[str]:
        """Which of these request ids are stored (``get_many``, reading only the id)."""
        return {record.request_id for record in self.get_many(list(request_ids), ("request_id",))}

    def get_many(self, request_ids: Sequence[str], fields: Sequence[str] = ()) -> list[RequestRecord]:
        """The stored ones of these requests (strongly consistent; BatchGetItem, 100 keys a call), in no order;
        only ``fields`` of each when given (the rest read as absent). Keys DynamoDB leaves unprocessed are asked
        for again after a short backoff."""
        request: dict[str, Any] = {"ConsistentRead": True}
        if fields:
            request["ProjectionExpression"] = ", ".join(f"#f{n}" for n in range(len(fields)))
            request["ExpressionAttributeNames"] = {f"#f{n}": name for n, name in enumerate(fields)}
        records: list[RequestRecord] = []
        for start in range(0, len(request_ids), 100):
            keys: list[dict[str, Attr]] = [
                {"pk": _s(f"REQ#{i}"), "sk": _s("REQ")} for i in request_ids[start : start + 100]
            ]
            attempt = 0
            while keys:
                if attempt:
                    self.sleep(min(2.0, 0.05 * 2**attempt) * random.random())
                result = self._call("batch_get_item", RequestItems={self.table: {**request, "Keys": keys}})
                records.extend(record_from_item(i) for i in result.get("Responses", {}).get(self.table, []))
                keys = result.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                attempt += 1
        return records

    def open_request_ids(self) -> list[str]:
        """The ids of every request not yet ended, from the sparse ``open`` index (eventually consistent: a
        request that just ended may still be listed, one just stored may not be yet)."""
        ids: list[str] = []
        for shard in OPEN_SHARDS:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": OPEN_INDEX,
                "KeyConditionExpression": "open_shard = :shard",
                "ExpressionAttributeValues": {":shard": _s(shard)},
            }
            while True:
                result = self._call("query", **kwargs)
                ids.extend(item["pk"]["S"].removeprefix("REQ#") for item in result.get("Items", []))
                if not result.get("LastEvaluatedKey"):
                    break
                kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        return ids

    def get(self, request_id: str) -> RequestRecord | None:
        """One request (strongly consistent)."""
        found = self._call(
            "get_item", TableName=self.table, Key={"pk": _s(f"REQ#{request_id}"), "sk": _s("REQ")}, ConsistentRead=True
        )
        item = found.get("Item")
        return record_from_item(item) if item else None

    def _transition(
        self,
        item: RequestRecord,
        to: str,
        sets: dict[str, Attr],
        *,
        lease: str | None = None,
        expired_by: float | None = None,
        dispatch: str | None = None,
        ready_by: float | None = None,
        unchanged_since: str | None = None,
        remove: Sequence[str] = (),
        add: dict[str, int] | None = None,
    ) -> bool:
        """Move ``item`` from its current status to ``to`` atomically with its batch's counters.

        Conditions: the item is still in ``item.status``; and, when given, still holds ``lease`` (the caller's
        attempt), or its lease ended before ``expired_by`` (a takeover), or it still owes message ``dispatch``,
        or it has not changed since ``unchanged_since`` (its ``updated_at`` as read).
        False when a condition failed: someone else moved it, and nothing was written.
        """
        ts = self.clock()
        if to in TERMINAL:  # off the open index
            remove = [*remove, "open_shard"]
        else:  # on it (again, after a reset; or for the first time, for an item older than the index)
            sets = {**sets, "open_shard": _s(open_shard(item.request_id))}
        values: dict[str, Attr] = {":to": _s(to), ":from": _s(item.status), ":now": _s(now_iso(ts))}
        names = {"#st": "status"}
        assignments = ["#st = :to", "updated_at = :now"]
        for index, (name, value) in enumerate(sets.items()):
            names[f"#a{index}"] = name
            values[f":v{index}"] = value
            assignments.append(f"#a{index} = :v{index}")
        condition = "#st = :from"
        # (name, placeholder, value, clause) for each condition the caller asked for.
        checks: list[tuple[str, str, Attr | None, str]] = [
            ("lease", ":lease", None if lease is None else _s(lease), "#{n} = {p}"),
            ("lease_until", ":expired_by", None if expired_by is None else _n(expired_by), "{missing} OR #{n} < {p}"),
            # Items written before dispatch tokens existed owe whichever message arrives.
            ("dispatch", ":dispatch", None if dispatch is None else _s(dispatch), "{missing} OR #{n} = {p}"),
            ("not_before", ":ready_by", None if ready_by is None else _n(ready_by), "{missing} OR #{n} <= {p}"),
            ("updated_at", ":read_at", None if unchanged_since is None else _s(unchanged_since), "#{n} = {p}"),
        ]
        for name, placeholder, expected, clause in checks:
            if expected is not None:
                names[f"#{name}"] = name
                values[placeholder] = expected
                text = clause.format(n=name, p=placeholder, missing=f"attribute_not_exists(#{name})")
                condition += f" AND ({text})"
        expression = "SET " + ", ".join(assignments)
        if remove:
            for index, name in enumerate(remove):
                names[f"#r{index}"] = name
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        if add:
            for index, (name, amount) in enumerate(add.items()):
                names[f"#i{index}"] = name
                values[f":i{index}"] = _n(amount)
            expression += " ADD " + ", ".join(f"#i{i} :i{i}" for i in range(len(add)))
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": _s(f"REQ#{item.request_id}"), "sk": _s("REQ")},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        actions: list[dict[str, Any]] = [{"Update": update}]
        if item.batch_id and item.status != to:
            actions.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"pk": _s(f"BATCH#{item.batch_id}"), "sk": _s("META")},
                        "UpdateExpression": "ADD #from :minus, #to :plus",
                        "ExpressionAttributeNames": {"#from": f"c_{item.status}", "#to": f"c_{to}"},
                        "ExpressionAttributeValues": {":minus": _n(-1), ":plus": _n(1)},
                    }
                }
            )
        # Concurrent transactions on one batch's counter item can be cancelled as TransactionConflict:
        # nothing was written, so try again (a few times, with jitter) before giving up.
        attempt = 0
        while True:
            try:
                if len(actions) == 1:
                    self.client.update_item(**update)
                else:
                    self.client.transact_write_items(TransactItems=actions)
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ConditionalCheckFailedException":
                    return False
                if code == "TransactionCanceledException":
                    reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                    if "ConditionalCheckFailed" in reasons:  # nothing written
                        return False
                    if "TransactionConflict" in reasons and attempt < 5:
                        self.sleep(random.uniform(0, 0.05 * 2**attempt))
                        attempt += 1
                        continue
                raise StoreError(f"DynamoDB status change to {to} failed: {code}") from exc
            except BotoCoreError as exc:
                raise StoreError(f"DynamoDB status change to {to} failed: {type(exc).__name__}") from exc

    def _running(self, item: RequestRecord, lease: str, lease_until: float, ts: float, **changes: Any) -> RequestRecord:
        return replace(
            item,
            status="running",
            lease=lease,
            lease_until=lease_until,
            attempts=item.attempts + 1,
            started_at=now_iso(ts),
            **changes,
        )

    def claim(self, item: RequestRecord, lease_until: float) -> RequestRecord | None:
        """Claim a queued request for one attempt that may run until ``lease_until`` (epoch seconds); None when
        it is not queued, owes another message than ``item.dispatch``, or must wait longer (nothing written).

        ``item`` needs only the request id, batch id and dispatch token: the worker claims with the message's
        own data, which saves a read in the common case."""
        lease, ts = new_token(), self.clock()
        sets = {"lease": _s(lease), "lease_until": _n(lease_until), "started_at": _s(now_iso(ts))}
        queued = replace(item, status="queued")
        # A delayed message may arrive up to a second early (SQS delays are whole seconds).
        if not self._transition(
            queued,
            "running",
            sets,
            dispatch=item.dispatch,
            ready_by=ts + 1.0,
            remove=["not_before", "wait_reason"],
            add={"attempts": 1},
        ):
            return None
        return self._running(queued, lease, lease_until, ts, not_before=None, wait_reason=None)

    def take_over(self, item: RequestRecord, lease_until: float) -> RequestRecord | None:
        """Claim a running request whose lease has ended (the attempt holding it died): counts one failure.
        None when it moved on or its lease is still live."""
        if item.status != "running" or item.lease is None:
            return None
        lease, ts = new_token(), self.clock()
        sets = {"lease": _s(lease), "lease_until": _n(lease_until), "started_at": _s(now_iso(ts))}
        if not self._transition(
            item, "running", sets, lease=item.lease, expired_by=ts, add={"attempts": 1, "failures": 1}
        ):
            return None
        return self._running(item, lease, lease_until, ts, failures=item.failures + 1)

    def _answer_budget(self, item: RequestRecord) -> int:
        return ITEM_BUDGET - item.input_bytes() - 4_000

    def succeed(self, item: RequestRecord, answer: dict[str, Any], latency_ms: int) -> bool:
        """Record the answer; False if this attempt's lease was taken over (its result is dropped)."""
        sets = {
            **_answer_attrs(answer, self._answer_budget(item)),
            "latency_ms": _n(latency_ms),
            "finished_at": _s(now_iso(self.clock())),
        }
        return self._transition(
            item, "succeeded", sets, lease=item.lease, remove=["error", "lease_until", "not_before", "wait_reason"]
        )

    def fail(self, item: RequestRecord, error: dict[str, Any], latency_ms: int | None = None) -> bool:
        """Record a final failure with its reason (by the attempt holding the lease, or of a queued request)."""
        sets = {"error": _j(error), "finished_at": _s(now_iso(self.clock()))}
        if latency_ms is not None:
            sets["latency_ms"] = _n(latency_ms)
        lease = item.lease if item.status == "running" else None
        return self._transition(item, "failed", sets, lease=lease, remove=["lease_until", "not_before", "wait_reason"])

    def abandon(self, item: RequestRecord, error: dict[str, Any]) -> bool:
        """Fail a request whose message was dead-lettered: queued, or running with its lease ended. False when
        it ended or an attempt still holds a live lease."""
        sets = {"error": _j(error), "finished_at": _s(now_iso(self.clock()))}
        if item.status == "running":
            return self._transition(item, "failed", sets, lease=item.lease, expired_by=self.clock())
        return item.status == "queued" and self._transition(item, "failed", sets, remove=["not_before", "wait_reason"])

    def requeue(self, item: RequestRecord, error: dict[str, Any], *, failure: bool = True) -> bool:
        """Hand a running request back after a retryable error: the same message comes back (through its
        visibility) and may claim it again. The error is kept; ``failure`` counts it as a real failure."""
        return self._transition(
            item, "queued", {"error": _j(error)}, lease=item.lease, remove=["lease_until"],
            add={"failures": 1} if failure else None,
        )

    def defer(self, item: RequestRecord, not_before: float, reason: str) -> RequestRecord | None:
        """Put a request back to wait until ``not_before`` (epoch seconds) for ``reason`` without counting an
        attempt: a new dispatch token, so the stream sends a fresh message (its receive count starts again)
        delayed until then. From queued (the message's token must be current) or from running (by the lease
        holder, whose attempt is then not counted). None when the request moved on."""
        token = new_token()
        sets = {"dispatch": _s(token), "not_before": _n(round(not_before, 3)), "wait_reason": _s(reason)}
        if item.status == "running":
            ok = self._transition(
                item, "queued", sets, lease=item.lease, remove=["lease_until"], add={"deferrals": 1, "attempts": -1}
            )
        else:
            ok = self._transition(item, "queued", sets, dispatch=item.dispatch, add={"deferrals": 1})
        if not ok:
            return None
        return replace(item, status="queued", dispatch=token, not_before=not_before, wait_reason=reason, lease=None)

    def redispatch(self, item: RequestRecord, *, lease_ended_before: float, error: dict[str, Any]) -> bool:
        """Owe a request a new message because the one it was owed is gone (``citeq.sweep``): a new dispatch
        token (the stream sends its message), counted in ``redispatches``.

        Only if the request has not changed since ``item`` was read (its ``updated_at``). From queued, its
        ``not_before`` must be past. From running, the lease must have ended before ``lease_ended_before``
        (epoch seconds): that attempt died with its message, which counts one failure, recorded with ``error``.
        False when the request moved on (nothing written)."""
        ts = self.clock()
        sets = {"dispatch": _s(new_token())}
        if item.updated_at is None:
            return False
        if item.status == "running" and item.lease is not None:
            return self._transition(
                item,
                "queued",
                {**sets, "error": _j(error)},
                lease=item.lease,
                expired_by=lease_ended_before,
                unchanged_since=item.updated_at,
                remove=["lease", "lease_until"],
                add={"failures": 1, "redispatches": 1},
            )
        return item.status == "queued" and self._transition(
            item,
            "queued",
            sets,
            dispatch=item.dispatch,
            ready_by=ts,
            unchanged_since=item.updated_at,
            add={"redispatches": 1},
        )

    def cancel(self, item: RequestRecord) -> bool:
        """Cancel a queued request."""
        return item.status == "queued" and self._transition(
            item, "cancelled", {"finished_at": _s(now_iso(self.clock()))}
        )

    def reset(self, item: RequestRecord) -> RequestRecord | None:
        """Put a failed (or cancelled) request back to queued for another try, in a new retry generation with a
        new dispatch token (the stream sends its message). None if it was not failed or cancelled."""
        if item.status not in ("failed", "cancelled"):
            return None
        generation, token = item.generation + 1, new_token()
        sets = {"generation": _n(generation), "dispatch": _s(token), "failures": _n(0)}
        if not self._transition(item, "queued", sets, remove=["finished_at", "not_before", "wait_reason"]):
            return None
        return replace(item, status="queued", generation=generation, dispatch=token, failures=0, finished_at=None)

    def mark_callback_done(self, request_id: str, generation: int) -> bool:
        """Record that the callback of ``generation`` was delivered; False if it had been already."""
        return self._conditional(
            "update_item",
            Key={"pk": _s(f"REQ#{request_id}"), "sk": _s("REQ")},
            UpdateExpression="SET callback_done = :g",
            ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(callback_done) OR callback_done < :g)",
            ExpressionAttributeValues={":g": _n(generation)},
        )

    def record_delivery(self, request_id: str, delivery: dict[str, Any]) -> None:
        """Append one callback delivery attempt to the request."""
        self._call(
            "update_item",
            TableName=self.table,
            Key={"pk": _s(f"REQ#{request_id}"), "sk": _s("REQ")},
            UpdateExpression="SET deliveries = list_append(if_not_exists(deliveries, :empty), :d)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":d": {"L": [_j(delivery)]}, ":empty": {"L": []}},
        )

    def page(
        self, batch_id: str, limit: int = 100, start: dict[str, Attr] | None = None
    ) -> tuple[list[RequestRecord], dict[str, Attr] | None]:
        """One page of a batch's requests in input order, and the key to continue from."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(f"BATCH#{batch_id}")},
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        result = self._call("query", **kwargs)
        return [record_from_item(i) for i in result.get("Items", [])], result.get("LastEvaluatedKey")

    def unfinished(self, batch_id: str, expected: int, page_size: int | None = None) -> list[Unfinished]:
        """A batch's queued and running requests (status, assistant, ``not_before``, ``wait_reason`` only).

        Queries the batch index from the end (the last requests of a batch are the ones still waiting) and
        stops at the page where ``expected`` (the batch's queued + running counters) have been seen, so a
        status read of a nearly finished 10k batch reads the tail, not every answer. Eventually consistent:
        a figure for a report, not a decision."""
        found: list[Unfinished] = []
        if expected <= 0:
            return found
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk",
            "FilterExpression": "#st IN (:queued, :running)",
            "ProjectionExpression": "#st, #as, #nb, #why",
            "ExpressionAttributeNames": {
                "#st": "status", "#as": "assistant", "#nb": "not_before", "#why": "wait_reason",
            },
            "ExpressionAttributeValues": {
                ":pk": _s(f"BATCH#{batch_id}"), ":queued": _s("queued"), ":running": _s("running"),
            },
            "ScanIndexForward": False,
        }
        if page_size:
            kwargs["Limit"] = page_size
        while True:
            result = self._call("query", **kwargs)
            found.extend(
                Unfinished(
                    status=_get_s(item, "status") or "queued",
                    assistant=_get_s(item, "assistant") or "",
                    not_before=_get_f(item, "not_before"),
                    wait_reason=_get_s(item, "wait_reason"),
                )
                for item in result.get("Items", [])
            )
            start = result.get("LastEvaluatedKey")
            if not start or len(found) >= expected:
                return found
            kwargs["ExclusiveStartKey"] = start

    def iter_batch(self, batch_id: str, page_size: int = 200) -> Iterator[RequestRecord]:
        """Every request of a batch, in input order."""
        start: dict[str, Attr] | None = None
        while True:
            items, start = self.page(batch_id, page_size, start)
            yield from items
            if not start:
                return
