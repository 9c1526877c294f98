"""One table of every benchmark's figures: benchmarks record rows (``figures.add(...)``) beside what they print,
and ``make bench`` writes them to ``out/bench.md`` (``CITEQ_BENCH_OUT`` elsewhere).

The table is rewritten after every row, so a run stopped part-way (a long scale size killed, a crash in a later
benchmark's teardown) still leaves the rows measured so far; the first row of a session replaces the last
session's table."""

from __future__ import annotations

import os
import platform
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Row:
    """One figure beside the baseline measured in the same run."""

    figure: str
    value: str
    baseline: str
    ratio: float | None
    goal: str


def machine() -> str:
    """CPU model and count, memory, Python: what the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
        with open("/proc/meminfo") as info:
            memory = int(next(line.split()[1] for line in info if line.startswith("MemTotal:"))) / 1024 / 1024
    except OSError:
        memory = 0.0
    return f"{os.cpu_count()} x {model}, {memory:.0f} GB, Python {platform.python_version()}"


def load() -> float | None:
    """The 1-minute load average (the benchmark's own work included): how busy the machine was."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class Figures:
    """The rows recorded so far in this session."""

    rows: list[Row] = field(default_factory=list)
    path: Path | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    loads: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, figure: str, value: str, baseline: str = "", ratio: float | None = None, goal: str = "") -> None:
        """Record one row and rewrite the table with it."""
        with self._lock:
            self.rows.append(Row(figure, value, baseline, ratio, goal))
            if (now := load()) is not None:
                self.loads.append(now)
            self.write(self.path)

    def markdown(self, when: datetime | None = None) -> str:
        """The table, with the machine and date under it."""
        when = when or datetime.now(UTC)
        lines = ["| figure | measured | baseline (same run) | ratio | goal |", "|---|---|---|---|---|"]
        for row in self.rows:
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
            lines.append(f"| {row.figure} | {row.value} | {row.baseline} | {ratio} | {row.goal} |")
        lines.append("")
        busy = ""
        if self.loads:
            busy = f"; 1-minute load average {min(self.loads):.1f}-{max(self.loads):.1f} as rows were recorded"
        lines.append(f"Machine: {machine()}. Run: {self.started:%Y-%m-%d %H:%M} to {when:%H:%M} UTC{busy}.")
        return "\n".join(lines) + "\n"

    def write(self, path: Path | None = None) -> Path:
        """Write the table (replacing the last one)."""
        target = path or Path(os.environ.get("CITEQ_BENCH_OUT", ROOT / "out" / "bench.md"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.markdown())
        return target


FIGURES = Figures()
