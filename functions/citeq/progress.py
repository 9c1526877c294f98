"""How far a batch has got: counts, rate, ETA, and a one-line progress bar; with pacing (issue 10), what the
token budget says: tokens used against the limit, deferred requests and why, paused assistants, and an ETA
from the budget."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from citeq.budget import SAFETY, BudgetState
from citeq.models import STATUSES, BatchInfo, Unfinished

# The figure in a reason ("waiting for token budget (19,400 input tokens/min)") changes with the budget;
# reasons are grouped without it.
_FIGURE = re.compile(r"\s*\([^()]*\btokens\b[^()]*\)")


def reason_kind(reason: str) -> str:
    """A wait reason without its details: ``rate limited (429)``, ``waiting for token budget``, ..."""
    return _FIGURE.sub("", reason.split(": ", 1)[0]).strip() or reason


@dataclass(frozen=True)
class Pacing:
    """A batch's unfinished requests against their assistants' token budgets, at ``now``."""

    now: float
    budgets: Mapping[str, BudgetState]
    remaining: Mapping[str, int]  # queued or running requests, by assistant
    deferred: int = 0  # queued with a not_before still ahead
    reasons: list[tuple[str, int]] = field(default_factory=list)  # most common first

    @classmethod
    def of(cls, unfinished: Iterable[Unfinished], budgets: Mapping[str, BudgetState], now: float) -> Pacing:
        """Count the deferred requests and their reasons, and the remaining requests per assistant."""
        remaining: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        deferred = 0
        for request in unfinished:
            remaining[request.assistant] += 1
            if request.status == "queued" and request.not_before is not None and request.not_before > now:
                deferred += 1
                reasons[reason_kind(request.wait_reason or "deferred")] += 1
        return cls(now, budgets, dict(remaining), deferred, reasons.most_common())

    def eta_of(self, assistant: str) -> float | None:
        """Seconds until the assistant's remaining requests have run at the budget's pace: a pause still to
        wait, then remaining x estimated tokens a call / effective tokens a window x the window."""
        budget = self.budgets.get(assistant)
        if budget is None:
            return None
        rate = budget.effective(self.now)
        if rate <= 0:
            return None
        pause = max(0.0, budget.paused_until - self.now) if budget.paused_until is not None else 0.0
        return pause + self.remaining.get(assistant, 0) * budget.estimate() / rate * budget.window

    @property
    def eta(self) -> float | None:
        """Seconds until every remaining request has run (budgets are per assistant, so the slowest one)."""
        etas = [self.eta_of(name) for name in self.remaining]
        if any(eta is None for eta in etas):
            return None
        return max((eta for eta in etas if eta is not None), default=0.0)

    def lines(self) -> list[str]:
        """The status lines about pacing."""
        lines = []
        why = ", ".join(f"{kind} {count}" for kind, count in self.reasons[:3])
        lines.append(f"deferred {self.deferred}" + (f" ({why})" if why else ""))
        for name in sorted(self.budgets):
            budget = self.budgets[name]
            per = _per(budget.window)
            effective = budget.effective(self.now)
            line = (
                f"budget {name}: {budget.used(self.now):,} of {budget.limit:,} input tokens{per} used, pacing at "
                f"{effective:,.0f}"
            )
            if budget.cut_rate is not None and effective < budget.limit * SAFETY - 0.5:
                line += f" (cut after a 429, recovering; {budget.throttles} so far)"
            elif budget.throttles:
                line += f" ({budget.throttles} 429s so far)"
            count = len(budget.samples)
            samples = f"mean of {count} call{'s' if count != 1 else ''}" if count else "default until calls report"
            line += f"; ~{budget.estimate():,} tokens a call ({samples})"
            ahead = budget.reserved_ahead(self.now)
            if ahead:
                line += f"; {ahead:,} reserved ahead"
            lines.append(line)
            if budget.paused_until is not None and budget.paused_until > self.now:
                lines.append(
                    f"paused {name}: {budget.pause_reason or 'paused'}; probed at {_clock(budget.paused_until)} "
                    f"(in {_duration(budget.paused_until - self.now)})"
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The ``pacing`` object of ``citeq batch status --json``."""
        assistants = []
        for name in sorted(self.budgets):
            budget = self.budgets[name]
            paused = budget.paused_until is not None and budget.paused_until > self.now
            eta = self.eta_of(name)
            assistants.append(
                {
                    "assistant": name,
                    "remaining": self.remaining.get(name, 0),
                    "window_s": budget.window,
                    "limit_tokens": budget.limit,
                    "used_tokens": budget.used(self.now),
                    "effective_tokens": round(budget.effective(self.now)),
                    "reserved_ahead_tokens": budget.reserved_ahead(self.now),
                    "estimate_tokens": budget.estimate(),
                    "samples": len(budget.samples),
                    "throttles": budget.throttles,
                    "paused_until": budget.paused_until if paused else None,
                    "pause_reason": budget.pause_reason if paused else None,
                    "eta_s": round(eta, 1) if eta is not None else None,
                }
            )
        return {
            "deferred": self.deferred,
            "wait_reasons": [{"reason": kind, "count": count} for kind, count in self.reasons],
            "assistants": assistants,
            "eta_s": round(self.eta, 1) if self.eta is not None else None,
        }


def _per(window: float) -> str:
    return "/min" if window == 60 else f" per {window:g} s window"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%SZ")


@dataclass(frozen=True)
class Progress:
    """A batch's counts with the rate and ETA derived from them (and from the token budget when paced)."""

    batch: BatchInfo
    elapsed: float
    pacing: Pacing | None = None

    @property
    def rate(self) -> float:
        """Requests finished per second since the batch was created."""
        return self.batch.finished / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_from_rate(self) -> float | None:
        """Seconds until every request has ended at the rate so far (None before the first finishes)."""
        remaining = self.batch.total - self.batch.finished
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds until every request has ended: from the token budget when calls are paced (the rate so far
        says little while the first window fills, or after a pause), else from the rate so far."""
        if self.batch.done:
            return 0.0
        if self.pacing is not None:
            return self.pacing.eta
        return self.eta_from_rate

    @property
    def incomplete(self) -> bool:
        """Whether the submission has not stored every request yet (cut short, or still running)."""
        return self.batch.state == "submitting"

    def finish_command(self) -> str:
        """The command that finishes an incomplete submission: the same ``citeq batch submit`` again."""
        b = self.batch
        command = f"citeq batch submit {b.source or 'FILE'}"
        if b.idempotency_key:
            # Stored as "<key>:<fingerprint of the input>".
            command += f" --idempotency-key {b.idempotency_key.rsplit(':', 1)[0]}"
        return command

    def summary(self) -> str:
        """Multi-line status for ``citeq batch status``."""
        b = self.batch
        lines = [
            f"batch {b.batch_id}  ({b.state}{', ' + b.source if b.source else ''}, created {b.created_at})",
            f"total {b.total}: " + ", ".join(f"{s} {b.counts[s]}" for s in STATUSES),
        ]
        if self.incomplete:
            lines.append(
                "incomplete: not every request has been stored yet (the submission was cut short, or is still "
                f"running); to finish it, run the same command again: {self.finish_command()}"
            )
        if self.pacing is not None and not b.done:
            lines.extend(self.pacing.lines())
        eta = self.eta
        if b.done:
            when = "done"
        elif eta is None:
            when = "ETA unknown (nothing finished yet)"
        else:
            basis = " from the token budget" if self.pacing is not None else ""
            when = f"ETA {_duration(eta)}{basis}"
        lines.append(f"rate {self.rate:.2f}/s, {when}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """``citeq batch status --json``."""
        b = self.batch
        body: dict[str, Any] = {
            "batch_id": b.batch_id,
            "state": b.state,
            "total": b.total,
            "counts": b.counts,
            "rate_per_s": round(self.rate, 3),
            "eta_s": round(self.eta, 1) if self.eta is not None else None,
            "eta_basis": "budget" if self.pacing is not None and not b.done else "rate",
            "incomplete": self.incomplete,
        }
        if self.incomplete:
            body["finish_with"] = self.finish_command()
        if self.pacing is not None and not b.done:
            body["pacing"] = self.pacing.to_dict()
        return body

    def bar(self, width: int = 30) -> str:
        """``[#####.....] 123/500 ok 120 failed 3 | 4.1/s ETA 1m32s``."""
        b = self.batch
        filled = int(width * b.finished / b.total) if b.total else width
        eta = "" if b.done else f" ETA {_duration(self.eta)}" if self.eta else ""
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {b.finished}/{b.total} ok {b.counts['succeeded']} "
            f"failed {b.counts['failed']} cancelled {b.counts['cancelled']} | {self.rate:.1f}/s{eta}"
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
