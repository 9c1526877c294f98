"""How far a batch has got: counts, rate, ETA, and a one-line progress bar."""

from __future__ import annotations

from dataclasses import dataclass

from citeq.store import STATUSES, BatchInfo


@dataclass(frozen=True)
class Progress:
    """A batch's counts with the rate and ETA derived from them."""

    batch: BatchInfo
    elapsed: float

    @property
    def rate(self) -> float:
        """Requests finished per second since the batch was created."""
        return self.batch.finished / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every request has ended at the current rate (None before the first finishes)."""
        remaining = self.batch.total - self.batch.finished
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    def summary(self) -> str:
        """Multi-line status for ``citeq batch status``."""
        b = self.batch
        lines = [
            f"batch {b.batch_id}  ({b.state}{', ' + b.source if b.source else ''}, created {b.created_at})",
            f"total {b.total}: " + ", ".join(f"{s} {b.counts[s]}" for s in STATUSES),
        ]
        eta = self.eta
        lines.append(
            f"rate {self.rate:.2f}/s, "
            + ("done" if b.done else f"ETA {_duration(eta)}" if eta else "ETA unknown (nothing finished yet)")
        )
        return "\n".join(lines)

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
