"""The chat-input-token budget every worker draws from (issue 10), kept in the results table.

Pinecone Assistant limits chat input tokens per minute by plan (Starter 100k, Standard 300k, Enterprise 1M;
shared/reference §7.2), answers ``429 TOO_MANY_REQUESTS`` over it with no documented ``Retry-After``, and a
project quota with 403. A prompt carries the retrieved context, so one call costs about 9k-26k tokens.

One item per assistant (``pk=BUDGET#<assistant>``) holds a log of *slots*: each call's start time (epoch
seconds) and its tokens (an estimate until the call's real ``prompt_tokens`` replace it). A call may start at
the earliest time at which, counting it, no 60-second window holds more than the effective limit. A request
that must wait reserves that future slot and is put off until then, so waiting requests form an orderly
schedule instead of a stampede; only slots within ``HORIZON`` seconds are reserved, later ones wait and ask
again. The item is rewritten whole under a version condition (optimistic concurrency).

Self-correction: a 429 halves the effective limit (never below ``FLOOR`` of the plan), which then grows back by
``RECOVERY`` of the plan per minute (AIMD); a 403 pauses the assistant for ``PAUSE`` seconds, after which one
request probes and a success resumes everyone. Estimates are the 90th percentile of the last ``SAMPLES``
real prompt sizes (``DEFAULT_ESTIMATE`` before there are any).
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from citeq import aws
from citeq.errors import StoreError
from citeq.pacing import Slot
from citeq.store import Store

log = logging.getLogger(__name__)

WINDOW = 60.0
# Share of the plan's limit aimed at, so estimates that fall short rarely cross the real limit.
SAFETY = 0.95
FLOOR = 0.05
RECOVERY = 0.10
HORIZON = 300.0
PAUSE = 300.0
SAMPLES = 32
DEFAULT_ESTIMATE = 15_000
CONFLICT_TRIES = 8


@dataclass
class BudgetState:
    """One assistant's budget as stored."""

    limit: int
    version: int = 0
    slots: dict[str, list[float]] = field(default_factory=dict)  # request id -> [start, tokens]
    samples: list[int] = field(default_factory=list)
    cut_rate: float | None = None  # effective limit right after the last 429
    cut_at: float = 0.0
    paused_until: float | None = None
    pause_reason: str | None = None
    throttles: int = 0

    def effective(self, now: float) -> float:
        """Tokens per minute aimed at now: the plan's limit (less the safety margin), or after a 429 the cut
        rate growing back additively."""
        ceiling = self.limit * SAFETY
        if self.cut_rate is None:
            return ceiling
        return min(ceiling, self.cut_rate + (now - self.cut_at) / 60.0 * RECOVERY * self.limit)

    def estimate(self) -> int:
        """Tokens to reserve for a call: the 90th percentile of recent real prompts."""
        if not self.samples:
            return DEFAULT_ESTIMATE
        ordered = sorted(self.samples)
        return int(ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)])

    def prune(self, now: float) -> None:
        """Forget slots that have left every window."""
        self.slots = {rid: slot for rid, slot in self.slots.items() if slot[0] > now - WINDOW}

    def used(self, now: float) -> int:
        """Tokens started in the last minute."""
        return int(sum(n for t, n in self.slots.values() if now - WINDOW < t <= now))

    def reserved_ahead(self, now: float) -> int:
        """Tokens reserved for calls that start later."""
        return int(sum(n for t, n in self.slots.values() if t > now))

    def to_item(self, assistant: str) -> dict[str, Any]:
        """The DynamoDB item."""
        body = {
            "limit": self.limit,
            "slots": self.slots,
            "samples": self.samples,
            "cut_rate": self.cut_rate,
            "cut_at": self.cut_at,
            "paused_until": self.paused_until,
            "pause_reason": self.pause_reason,
            "throttles": self.throttles,
        }
        return {
            "pk": {"S": f"BUDGET#{assistant}"},
            "sk": {"S": "BUDGET"},
            "version": {"N": str(self.version)},
            "state": {"S": json.dumps(body, separators=(",", ":"))},
        }

    @classmethod
    def from_item(cls, item: dict[str, Any] | None, limit: int) -> BudgetState:
        """From the DynamoDB item (a fresh budget when there is none)."""
        if not item:
            return cls(limit=limit)
        body = json.loads(item["state"]["S"])
        return cls(
            limit=limit,
            version=int(item["version"]["N"]),
            slots={k: list(v) for k, v in body.get("slots", {}).items()},
            samples=[int(s) for s in body.get("samples", [])],
            cut_rate=body.get("cut_rate"),
            cut_at=float(body.get("cut_at") or 0.0),
            paused_until=body.get("paused_until"),
            pause_reason=body.get("pause_reason"),
            throttles=int(body.get("throttles") or 0),
        )


def earliest_start(slots: list[tuple[float, float]], cost: float, limit: float, now: float) -> float:
    """The earliest start (>= ``now``) for a call of ``cost`` tokens such that no 60 s window holds more than
    ``limit`` tokens, given the other calls' ``(start, tokens)``. A call is counted for the 60 s after its start."""
    cost = min(cost, limit)  # a call larger than the limit can only ever run alone
    ordered = sorted(slots)
    starts = [t for t, _ in ordered]
    totals = list(itertools.accumulate((n for _, n in ordered), initial=0.0))

    def active(x: float) -> float:
        """Tokens of the calls counted at instant ``x`` (started in (x - 60, x])."""
        return totals[bisect.bisect_right(starts, x)] - totals[bisect.bisect_right(starts, x - WINDOW)]

    def peak(start: float) -> float:
        # The busiest instant of [start, start + 60) is ``start`` or a later call's start.
        later = starts[bisect.bisect_right(starts, start) : bisect.bisect_left(starts, start + WINDOW)]
        return max(active(x) for x in [start, *later])

    candidates = sorted({now} | {t + WINDOW for t in starts if t + WINDOW > now})
    for candidate in candidates:
        if peak(candidate) + cost <= limit + 1e-6:
            return candidate
    return candidates[-1]


class TokenBudget:
    """The Pacer of ``citeq.pacing`` backed by one DynamoDB item per assistant."""

    def __init__(
        self,
        store: Store,
        tokens_per_minute: int,
        *,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.limit = tokens_per_minute
        self.wall = wall
        self.rng = rng or random.Random()
        self.sleep = sleep

    # ------------------------------------------------------------------ storage
    def _key(self, assistant: str) -> dict[str, Any]:
        return {"pk": {"S": f"BUDGET#{assistant}"}, "sk": {"S": "BUDGET"}}

    def read(self, assistant: str) -> BudgetState:
        """The assistant's budget now (strongly consistent)."""
        found = aws.call(
            self.store.client, "dynamodb", "get_item", TableName=self.store.table, Key=self._key(assistant),
            ConsistentRead=True,
        )
        return BudgetState.from_item(found.get("Item"), self.limit)

    def _write(self, assistant: str, state: BudgetState) -> bool:
        """Store ``state`` if nobody changed the item since it was read; False on a conflict."""
        expected = state.version
        state.version += 1
        try:
            self.store.client.put_item(
                TableName=self.store.table,
                Item={**state.to_item(assistant), "expires_at": {"N": str(int(self.wall()) + 30 * 86400)}},
                ConditionExpression="attribute_not_exists(pk) OR version = :v",
                ExpressionAttributeValues={":v": {"N": str(expected)}},
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise aws.translate("dynamodb", "put_item", exc) from exc
        except BotoCoreError as exc:
            raise aws.translate("dynamodb", "put_item", exc) from exc

    def _update(self, assistant: str, change: Callable[[BudgetState, float], Any]) -> Any:
        """Read, change and write the budget, again on a conflict; returns what ``change`` returned (a change
        returning None writes nothing)."""
        for attempt in range(CONFLICT_TRIES):
            state = self.read(assistant)
            now = self.wall()
            state.prune(now)
            result = change(state, now)
            if result is None or self._write(assistant, state):
                return result
            self.sleep(self.rng.uniform(0, 0.02 * 2**attempt))
        raise StoreError(f"token budget of {assistant} stayed contended for {CONFLICT_TRIES} tries")

    # ------------------------------------------------------------------ the Pacer protocol
    def acquire(self, assistant: str, request_id: str) -> Slot:
        """Reserve this request's slot (now, or the earliest later one within the horizon)."""
        outcome: list[Slot] = []

        def change(state: BudgetState, now: float) -> bool | None:
            outcome.clear()
            if state.paused_until is not None:
                if state.paused_until > now:
                    wait = state.paused_until + self.rng.uniform(0, 5)
                    outcome.append(Slot(wait, f"assistant paused: {state.pause_reason}"))
                    return None
                state.paused_until = now + PAUSE  # this request probes; the others keep waiting
            held = state.slots.get(request_id)
            if held is not None and held[0] <= now + 1.0:
                outcome.append(Slot())
                return True if state.paused_until is not None else None
            limit = state.effective(now)
            cost = state.estimate()
            others = [(t, n) for rid, (t, n) in state.slots.items() if rid != request_id]
            start = earliest_start(others, cost, limit, now)
            if start > now + HORIZON:
                outcome.append(Slot(now + HORIZON + self.rng.uniform(0, 10), self._waiting(limit)))
                return None
            state.slots[request_id] = [round(start, 3), cost]
            outcome.append(Slot() if start <= now + 0.5 else Slot(start, self._waiting(limit)))
            return True

        try:
            self._update(assistant, change)
        except StoreError as exc:
            # A budget that cannot be read or written must not let calls through unpaced: wait a little.
            log.warning("token budget of %s unavailable (%s); waiting", assistant, exc)
            return Slot(self.wall() + 2.0 + self.rng.uniform(0, 3), "token budget unavailable")
        return outcome[0]

    @staticmethod
    def _waiting(limit: float) -> str:
        return f"waiting for token budget ({limit:,.0f} input tokens/min)"

    def settle(self, assistant: str, request_id: str, prompt_tokens: int) -> None:
        """Replace the estimate by the real prompt size; a success also ends a pause."""

        def change(state: BudgetState, now: float) -> bool:
            held = state.slots.get(request_id)
            if held is not None and prompt_tokens > 0:
                held[1] = prompt_tokens
            if prompt_tokens > 0:
                state.samples = [*state.samples, prompt_tokens][-SAMPLES:]
            state.paused_until = state.pause_reason = None
            return True

        self._quietly(assistant, change)

    def release(self, assistant: str, request_id: str) -> None:
        """Give back a reservation whose call the service did not count."""

        def change(state: BudgetState, now: float) -> bool | None:
            return True if state.slots.pop(request_id, None) is not None else None

        self._quietly(assistant, change)

    def throttled(self, assistant: str, request_id: str, retry_after: float | None) -> tuple[float, str]:
        """A 429 anyway: halve the effective limit and reserve a new slot for the request."""

        def change(state: BudgetState, now: float) -> tuple[float, str]:
            state.cut_rate = max(FLOOR * state.limit, state.effective(now) * 0.5)
            state.cut_at = now
            state.throttles += 1
            state.slots.pop(request_id, None)
            others = [(t, n) for t, n in state.slots.values()]
            not_before = now + (retry_after or 0.0)
            start = max(not_before, earliest_start(others, state.estimate(), state.cut_rate, not_before))
            start = min(start, now + HORIZON)
            state.slots[request_id] = [round(start, 3), state.estimate()]
            return start, f"rate limited (429): pacing cut to {state.cut_rate:,.0f} input tokens/min"

        try:
            result: tuple[float, str] = self._update(assistant, change)
        except StoreError:
            return self.wall() + 5.0 + self.rng.uniform(0, 5), "rate limited (429)"
        return result

    def pause(self, assistant: str, request_id: str, reason: str) -> tuple[float, str]:
        """A 403 (quota): pause the assistant; one request probes after ``PAUSE`` seconds."""

        def change(state: BudgetState, now: float) -> tuple[float, str]:
            state.paused_until = now + PAUSE
            state.pause_reason = f"quota answer (403): {reason}"
            state.slots.pop(request_id, None)
            return state.paused_until, f"assistant paused: {state.pause_reason}"

        try:
            result: tuple[float, str] = self._update(assistant, change)
        except StoreError:
            return self.wall() + PAUSE, f"assistant paused: quota answer (403): {reason}"
        until, why = result
        return until + self.rng.uniform(0, 5), why

    def _quietly(self, assistant: str, change: Callable[[BudgetState, float], Any]) -> None:
        """Bookkeeping whose loss only costs accuracy: never fail the answer over it."""
        try:
            self._update(assistant, change)
        except StoreError as exc:
            log.warning("token budget of %s not updated: %s", assistant, exc)
