"""The chat-input-token budget every worker draws from (issue 10), kept in the results table.

Pinecone Assistant limits chat input tokens per minute by plan (Starter 100k, Standard 300k, Enterprise 1M;
shared/reference §7.2), answers ``429 TOO_MANY_REQUESTS`` over it with no documented ``Retry-After``, and a
project quota with 403. A prompt carries the retrieved context, so one call costs about 9k-26k tokens.

One item per assistant (``pk=BUDGET#<assistant>``) holds a log of *slots*: each call's start time (epoch
seconds) and its tokens (an estimate until the call's real ``prompt_tokens`` replace it). A call may start at
the earliest time at which, counting it, no 60-second window holds more than the effective limit. A request
that must wait reserves that future slot and is put off until then, so waiting requests form an orderly
schedule instead of a stampede; only slots within ``HORIZON`` seconds are reserved (less while fewer than
``TRUSTED`` real prompt sizes are known), later ones wait and ask again. The item is rewritten whole under a
version condition (optimistic concurrency).

Self-correction (AIMD) on evidence: a 429 is evidence of the limit only when calls keep being refused, so the
rate is cut once the last ``CONFIRM`` calls to start were all refused (a full window refuses every call until
tokens leave it; an isolated 429 is followed by acceptances), or, after a cut, on a refusal with the window
holding the rate refused then (the same limit again). An isolated 429 only puts its own request off: after
its ``Retry-After`` when the answer carries one (it is the server's word on that request), else at the next
slot of the schedule. The cut sets the effective limit to ``CUT`` of the rate the service turned away (the
tokens of the calls made in the last window; never below ``FLOOR`` of the plan), once per window however many
calls of that burst were refused. It then grows back by ``RECOVERY`` of the rate refused per window, but
stays under the rate that was refused, a cap that itself relaxes by ``RELAX`` per window (so a configured rate
that is too high converges, and a limit raised later is found again). A 403 pauses the assistant for ``PAUSE``
seconds, after which one request probes and a success resumes everyone. Estimates are the mean of the last
``SAMPLES`` real prompt sizes (``DEFAULT_ESTIMATE`` before there are any); when a reserved slot comes, the window
is checked again with the real sizes of the calls made meanwhile, and the request slips if it no longer fits.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from citeq import aws
from citeq.errors import StoreError
from citeq.pacing import Slot

if TYPE_CHECKING:  # progress reads BudgetState without the DynamoDB store module (issue 13)
    from citeq.store import Store

log = logging.getLogger(__name__)

WINDOW = 60.0
# Share of the plan's limit aimed at, so estimates that fall short rarely cross the real limit.
SAFETY = 0.97
FLOOR = 0.05
CUT = 0.5
RECOVERY = 0.10
RELAX = 0.01
# Refusals in a row (the last calls to start, every one refused) that make a 429 evidence of the limit: a full
# window refuses every call, while a 429 of the service's own (or an injected fault, issue 14: ~10% of calls)
# is isolated; at 10% random 429s, four in a row follow ~0.1% of them (three: ~1%, which a simulated batch
# met, its rate then halved for minutes).
CONFIRM = 4
HORIZON = 300.0
# Real prompt sizes known before slots are reserved the whole ``HORIZON`` ahead (fewer: proportionally less far);
# the mean of 8 prompts drawn evenly from 9k-25k tokens has a standard error of ~10% of the true mean.
TRUSTED = 8
PAUSE = 300.0
SAMPLES = 32
DEFAULT_ESTIMATE = 15_000
# Every worker of every invocation reads and rewrites the one item: under a burst of deliveries, tries collide.
CONFLICT_TRIES = 30
# Seconds kept between planned slots: a put-off request starts up to this late (delays are whole seconds, and
# the event source gathers a batch for up to its batching window) without sharing a window with the next.
GUARD = 1.0
# Seconds a reserved slot is kept past its window for a request that has not come for it yet.
LATE = 60.0
# A slot this close is waited for in the worker (a brief sleep) rather than by putting the request off.
BRIEF = 1.0


@dataclass
class BudgetState:
    """One assistant's budget as stored."""

    limit: int
    window: float = WINDOW
    version: int = 0
    slots: dict[str, list[float]] = field(default_factory=dict)  # request id -> [start, tokens]
    samples: list[int] = field(default_factory=list)
    cut_rate: float | None = None  # effective limit right after the last 429
    cut_at: float = 0.0
    refused: float | None = None  # tokens per window that met the last 429
    paused_until: float | None = None
    pause_reason: str | None = None
    throttles: int = 0
    # Start times (epoch seconds) of the calls refused in the last window and since the last accepted call.
    strikes: list[float] = field(default_factory=list)
    # Calls told to go whose outcome is not known yet: request id -> start (epoch seconds).
    flying: dict[str, float] = field(default_factory=dict)
    # Calls told to go in the last window, answered or not (refused ones leave): request id -> start (epoch
    # seconds). A reserved slot whose time has come is not a call until its request comes for it.
    called: dict[str, float] = field(default_factory=dict)

    def effective(self, now: float) -> float:
        """Tokens per minute aimed at now: the plan's limit (less the safety margin), or after a 429 the cut
        rate growing back additively."""
        ceiling = self.limit * SAFETY
        if self.cut_rate is None:
            return ceiling
        windows = (now - self.cut_at) / self.window
        # Growing back by a share of the rate the service let through, not of the configured limit: a limit set
        # 3x too high would otherwise be back at the edge within a window or two, meeting it again and again.
        grown = self.cut_rate + windows * RECOVERY * min(self.limit, self.refused or self.limit)
        if self.refused is not None:
            ceiling = min(ceiling, self.refused * SAFETY * (1 + RELAX * windows))
        return min(ceiling, grown)

    def estimate(self) -> int:
        """Tokens to reserve for a call: the mean of recent real prompts. (A high percentile would waste the
        budget: a waiting request's start is fixed when it is put off; calls that cost more than estimated
        are caught when their slot comes, by checking the window again.)"""
        if not self.samples:
            return DEFAULT_ESTIMATE
        return round(sum(self.samples) / len(self.samples))

    def estimate_high(self) -> int:
        """A large call's tokens: the 90th percentile of recent real prompts (the room a call needs when it
        starts, so one that costs more than the mean does not push the window over)."""
        if not self.samples:
            return DEFAULT_ESTIMATE
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, (9 * len(ordered)) // 10)]

    def prune(self, now: float) -> None:
        """Forget slots that have left every window (a slot whose request has not come yet, ``LATE`` seconds
        later)."""
        # Its request is late (a backlog in the queue): when it comes, its slot has come. Forgotten, the slot
        # would be planned again behind every later one, and with every request later than a window none would
        # ever run (a 2,000-question chaos run on a 4 s window stopped so).
        late = now - self.window - LATE
        self.slots = {
            rid: slot
            for rid, slot in self.slots.items()
            if slot[0] > now - self.window or (rid not in self.called and slot[0] > late)
        }
        self.flying = {rid: t for rid, t in self.flying.items() if t > now - self.window}
        self.called = {rid: t for rid, t in self.called.items() if t > now - self.window}

    def go(self, request_id: str, start: float, now: float) -> Slot:
        """The answer for a request whose slot is at ``start``: go (noting its call as in flight) when that is
        now or a brief sleep away, else wait for it."""
        if start <= now + BRIEF:
            self.flying[request_id] = self.called[request_id] = start
        return Slot() if start <= now else Slot(start, _waiting(self.effective(now)))

    def made(self, but: str | None = None) -> list[tuple[float, float]]:
        """``(start, tokens)`` of the calls made in the last window (all but ``but``'s): the calls the service
        counts, at their real sizes once answered."""
        return [(t, self.slots[rid][1]) for rid, t in self.called.items() if rid != but and rid in self.slots]

    def used(self, now: float) -> int:
        """Tokens of the slots started in the last window (minute), as ``citeq batch status`` shows them."""
        return int(sum(n for t, n in self.slots.values() if now - self.window < t <= now))

    def counted(self, now: float) -> int:
        """Tokens of the calls made in the last window: what the service has counted."""
        return int(sum(n for t, n in self.made() if now - self.window < t <= now))

    def drop(self, request_id: str) -> list[float] | None:
        """Forget the request's slot and call (the service did not count it); returns the slot."""
        self.flying.pop(request_id, None)
        self.called.pop(request_id, None)
        return self.slots.pop(request_id, None)

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
            "refused": self.refused,
            "paused_until": self.paused_until,
            "pause_reason": self.pause_reason,
            "throttles": self.throttles,
            "strikes": self.strikes,
            "flying": self.flying,
            "called": self.called,
        }
        return {
            "pk": {"S": f"BUDGET#{assistant}"},
            "sk": {"S": "BUDGET"},
            "version": {"N": str(self.version)},
            "state": {"S": json.dumps(body, separators=(",", ":"))},
        }

    @classmethod
    def from_item(cls, item: dict[str, Any] | None, limit: int, window: float = WINDOW) -> BudgetState:
        """From the DynamoDB item (a fresh budget when there is none)."""
        if not item:
            return cls(limit=limit, window=window)
        body = json.loads(item["state"]["S"])
        return cls(
            limit=limit,
            window=window,
            version=int(item["version"]["N"]),
            slots={k: list(v) for k, v in body.get("slots", {}).items()},
            samples=[int(s) for s in body.get("samples", [])],
            cut_rate=body.get("cut_rate"),
            cut_at=float(body.get("cut_at") or 0.0),
            refused=body.get("refused"),
            paused_until=body.get("paused_until"),
            pause_reason=body.get("pause_reason"),
            throttles=int(body.get("throttles") or 0),
            strikes=[float(t) for t in body.get("strikes", [])],
            flying={k: float(v) for k, v in body.get("flying", {}).items()},
            called={k: float(v) for k, v in body.get("called", {}).items()},
        )


def _waiting(limit: float) -> str:
    return f"waiting for token budget ({limit:,.0f} input tokens/min)"


class Schedule:
    """Calls' ``(start, tokens)``, each counted for ``window`` seconds after its start."""

    def __init__(self, slots: list[tuple[float, float]], window: float) -> None:
        ordered = sorted(slots)
        self.window = window
        self.ordered = ordered
        self.starts = [t for t, _ in ordered]
        self.totals = list(itertools.accumulate((n for _, n in ordered), initial=0.0))

    def active(self, x: float) -> float:
        """Tokens of the calls counted at instant ``x`` (started in (x - window, x])."""
        right = bisect.bisect_right(self.starts, x)
        return self.totals[right] - self.totals[bisect.bisect_right(self.starts, x - self.window)]

    def peak(self, start: float) -> float:
        """The most tokens counted at any instant of [start, start + window)."""
        # The busiest instant is ``start`` or a later call's start.
        low = bisect.bisect_right(self.starts, start)
        later = self.starts[low : bisect.bisect_left(self.starts, start + self.window)]
        return max(self.active(x) for x in [start, *later])

    def fits(self, start: float, cost: float, limit: float) -> bool:
        """Whether a call of ``cost`` tokens may start at ``start`` without any window exceeding ``limit``."""
        return self.peak(start) + min(cost, limit) <= limit + 1e-6

    def spaced(self, start: float, cost: float, limit: float) -> bool:
        """Whether a call starting at ``start`` keeps every call its share of time at ``limit`` per window
        (``tokens * window / limit`` seconds before the next one starts)."""
        pace = self.window / limit
        return all(start >= t + n * pace - 1e-6 or start + cost * pace <= t + 1e-6 for t, n in self.ordered)

    def earliest(self, cost: float, limit: float, now: float, *, spaced: bool = False) -> float:
        """The earliest start (>= ``now``) for a call of ``cost`` tokens (a call larger than the limit can only
        ever run alone). ``spaced``: calls are also spread evenly over the window rather than started in a
        burst, so a rate that turns out too high meets its first 429 after a few calls, not a window's worth."""
        cost = min(cost, limit)
        found = {now} | {t + self.window for t in self.starts if t + self.window > now}
        if spaced:
            found |= {t + n * self.window / limit for t, n in self.ordered if t + n * self.window / limit > now}
        candidates = sorted(found)
        for candidate in candidates:
            if self.fits(candidate, cost, limit) and (not spaced or self.spaced(candidate, cost, limit)):
                return candidate
        return candidates[-1]


def earliest_start(
    slots: list[tuple[float, float]], cost: float, limit: float, now: float, window: float = WINDOW
) -> float:
    """The earliest start (>= ``now``) for a call of ``cost`` tokens such that no window of ``window`` seconds
    holds more than ``limit`` tokens, given the other calls' ``(start, tokens)``."""
    return Schedule(slots, window).earliest(cost, limit, now)


class TokenBudget:
    """The Pacer of ``citeq.pacing`` backed by one DynamoDB item per assistant."""

    def __init__(
        self,
        store: Store,
        tokens_per_minute: int,
        *,
        window: float = WINDOW,
        pause: float = PAUSE,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.limit = tokens_per_minute
        self.window = window
        self.guard = min(GUARD, 0.1 * window)
        self.pause_seconds = pause
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
        return BudgetState.from_item(found.get("Item"), self.limit, self.window)

    def peek(self, assistants: Iterable[str]) -> dict[str, BudgetState]:
        """The budgets of ``assistants`` for reporting (``citeq batch status``): one eventually consistent
        BatchGetItem per 100 assistants, nothing written; an assistant without an item gets a fresh budget."""
        names = sorted(set(assistants))
        found: dict[str, BudgetState] = {name: BudgetState(limit=self.limit, window=self.window) for name in names}
        for first in range(0, len(names), 100):
            keys = [self._key(name) for name in names[first : first + 100]]
            while keys:
                answer = aws.call(
                    self.store.client, "dynamodb", "batch_get_item",
                    RequestItems={self.store.table: {"Keys": keys}},
                )
                for item in answer.get("Responses", {}).get(self.store.table, []):
                    name = item["pk"]["S"].removeprefix("BUDGET#")
                    # The limit the workers wrote wins over the reader's own setting.
                    stored = json.loads(item["state"]["S"]).get("limit")
                    found[name] = BudgetState.from_item(item, int(stored or self.limit), self.window)
                keys = answer.get("UnprocessedKeys", {}).get(self.store.table, {}).get("Keys", [])
                if keys:
                    self.sleep(self.rng.uniform(0.02, 0.1))  # throttled: ask again for the rest shortly
        return found

    def _write(self, assistant: str, state: BudgetState) -> bool:
        """Store ``state`` if nobody changed the item since it was read; False on a conflict."""
        expected = state.version
        state.version += 1
        return aws.conditional(
            self.store.client,
            "dynamodb",
            "put_item",
            TableName=self.store.table,
            Item={**state.to_item(assistant), "expires_at": {"N": str(int(self.wall()) + 30 * 86400)}},
            ConditionExpression="attribute_not_exists(pk) OR version = :v",
            ExpressionAttributeValues={":v": {"N": str(expected)}},
        )

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
            self.sleep(self.rng.uniform(0, min(0.5, 0.02 * 2**attempt)))
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
                state.paused_until = now + self.pause_seconds  # this request probes; the others keep waiting
            held = state.slots.get(request_id)
            limit = state.effective(now)
            cost = state.estimate()
            others = [(t, n) for rid, (t, n) in state.slots.items() if rid != request_id]
            # When a call starts, the real window (calls made meanwhile at their real sizes) must have room
            # for a large one, not just an average one.
            high = max(cost, state.estimate_high())
            # Only calls really made count here, not slots whose time has come before their requests did: when
            # every request comes late (a backlog in the queue), a window of such slots turned every request
            # away, each slipping into a window it then found full of the others' (a 2,000-question chaos run
            # stopped answering for good).
            # Each counted a guard longer than a window: a call reaches the service a moment after the start
            # recorded here, and leaves the service's window as much later.
            started = Schedule(state.made(but=request_id), self.window + self.guard)
            if held is not None and held[0] <= now + 1.0:
                # Its slot has come. It goes before the slots planned after it: only calls already made count.
                # Too full still (calls cost more than estimated, or it is late): it slips to when enough of
                # them have left the window, usually seconds.
                start = started.earliest(high, limit, now)
                state.slots[request_id] = [start, cost]
                outcome.append(state.go(request_id, start, now))
                return True
            # Slots are planned a little apart (``guard``) so a call that starts a second or two late, as
            # delayed messages do, still does not share a window with the next one.
            start = Schedule(others, self.window + self.guard).earliest(cost, limit, now, spaced=True)
            if start <= now:
                start = started.earliest(high, limit, now)
            if start > now + BRIEF and not state.samples:
                # No real prompt size known yet, so the estimate is a guess: plan nothing ahead, look again in a
                # few seconds, when the first calls have told their size.
                state.slots.pop(request_id, None)
                wait = now + min(5.0, self.window / 4) + self.rng.uniform(0, 2)
                outcome.append(Slot(wait, _waiting(limit)))
                return True if held is not None else None
            # A slot's distance from the previous one is fixed by the estimate when it is reserved, and a
            # request cannot be woken before its slot: a schedule reserved on the first calls' sizes alone keeps
            # their error for as long as it runs (issue 10: a batch planned on one call 15% above the mean ran at
            # 80% of the limit). So plan only as far ahead as the sizes known so far warrant.
            horizon = HORIZON * min(1.0, len(state.samples) / TRUSTED)
            if start > now + horizon:
                state.slots.pop(request_id, None)
                # The schedule is full until at least ``now + horizon``: ask again before that has run out, so
                # the requests asking then find slots that follow on (after it, the window would idle).
                again = now + max(BRIEF, horizon - self.window / 3) + self.rng.uniform(0, self.window / 6)
                outcome.append(Slot(again, _waiting(limit)))
                return True if held is not None else None
            state.slots[request_id] = [start, cost]
            outcome.append(state.go(request_id, start, now))
            return True

        try:
            self._update(assistant, change)
        except StoreError as exc:
            # A budget that cannot be read or written must not let calls through unpaced: wait a little.
            log.warning("token budget of %s unavailable (%s); waiting", assistant, exc)
            return Slot(self.wall() + 2.0 + self.rng.uniform(0, 3), "token budget unavailable")
        return outcome[0]

    def settle(self, assistant: str, request_id: str, prompt_tokens: int) -> None:
        """Replace the estimate by the real prompt size; a success also ends a pause."""

        def change(state: BudgetState, now: float) -> bool:
            held = state.slots.get(request_id)
            state.flying.pop(request_id, None)
            if held is not None:
                # An accepted call clears the refusals of calls that started before it: they were not a full window.
                state.strikes = [t for t in state.strikes if t > held[0]]
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
            called = request_id in state.called or request_id in state.flying
            return True if state.drop(request_id) is not None or called else None

        self._quietly(assistant, change)

    def throttled(self, assistant: str, request_id: str, retry_after: float | None) -> tuple[float, str]:
        """A 429 anyway: put the request off (at least ``retry_after`` seconds when the service sent one) and,
        when it is the ``CONFIRM``-th refusal in a row, cut the effective limit (once per window)."""

        def change(state: BudgetState, now: float) -> tuple[float, str]:
            state.throttles += 1
            held = state.drop(request_id)
            # Refusals older than a window say nothing of the window now.
            state.strikes = [t for t in state.strikes if t > now - self.window]
            state.strikes = sorted([*state.strikes, held[0] if held is not None else now])
            started = state.counted(now)
            # Evidence of a full window: the last CONFIRM calls to start were all refused. A call that started
            # since the first of them and is still in flight may be accepted yet: under concurrency 429s come back
            # before the answers of calls started between them.
            first = state.strikes[-CONFIRM] if len(state.strikes) >= CONFIRM else None
            confirmed = first is not None and not any(t > first for t in state.flying.values())
            # A refusal where an earlier cut found the limit (the window holding what the service let through
            # then) is the same limit again, not chance.
            confirmed = confirmed or (state.refused is not None and started + state.estimate() > state.refused)
            if confirmed and (state.cut_rate is None or now - state.cut_at >= self.window):
                # The calls of one burst that were refused are one event: one cut.
                rate = state.effective(now)
                state.refused = min(rate, started) if started > 0 else rate
                state.cut_rate = max(FLOOR * state.limit, state.refused * CUT)
                state.cut_at = now
            elif confirmed and state.refused is not None and 0 < started < state.refused:
                # Another call of the same burst refused: the calls counted at the first were not all accepted
                # either. What the service let through is nearer to what is left: lower the cap, not the cut.
                state.refused = started
                state.cut_rate = min(state.cut_rate or started, max(FLOOR * state.limit, started * CUT))
            limit = state.effective(now)
            others = [(t, n) for t, n in state.slots.values()]
            # Not at once even without Retry-After: a slot at ``now`` would count as a call started after the refusal.
            not_before = now + max(self.guard, min(HORIZON, retry_after or 0.0))
            estimate = state.estimate()
            planned = Schedule(others, self.window + self.guard).earliest(estimate, limit, not_before, spaced=True)
            start = min(max(not_before, planned), now + HORIZON)
            state.slots[request_id] = [start, estimate]
            if confirmed:
                why = f"rate limited (429): pacing cut to {limit:,.0f} input tokens per {self.window:g} s"
            elif retry_after is not None:
                why = f"rate limited (429): retrying after {retry_after:g} s (Retry-After)"
            else:
                why = "rate limited (429): retrying at the next slot"
            return start, why

        try:
            result: tuple[float, str] = self._update(assistant, change)
        except StoreError:
            wait = 5.0 if retry_after is None else min(HORIZON, max(1.0, retry_after))
            return self.wall() + wait + self.rng.uniform(0, 5), "rate limited (429)"
        return result

    def pause(self, assistant: str, request_id: str, reason: str) -> tuple[float, str]:
        """A 403 (quota): pause the assistant; one request probes after the pause."""

        def change(state: BudgetState, now: float) -> tuple[float, str]:
            state.paused_until = now + self.pause_seconds
            state.pause_reason = f"quota answer (403): {reason}"
            state.drop(request_id)
            return state.paused_until, f"assistant paused: {state.pause_reason}"

        try:
            result: tuple[float, str] = self._update(assistant, change)
        except StoreError:
            return self.wall() + self.pause_seconds, f"assistant paused: quota answer (403): {reason}"
        until, why = result
        return until + self.rng.uniform(0, 5), why

    def _quietly(self, assistant: str, change: Callable[[BudgetState, float], Any]) -> None:
        """Bookkeeping whose loss only costs accuracy: never fail the answer over it."""
        try:
            self._update(assistant, change)
        except StoreError as exc:
            log.warning("token budget of %s not updated: %s", assistant, exc)
