"""Fault injection: latency, slow first token, error rates, dropped connections, text/plain errors.

Faults come from two places, checked in this order for each request on a matching route and assistant:
1. a *script*, a queue of faults consumed one per request (``{"status": 429, "retry_after": 1}``,
   ``{"drop": "response"}``, ``{"drop": "stream", "after_chunks": 3}``) — deterministic, for tests;
2. *rates* (``rate_429``, ``rate_500``, ``rate_503``, ``rate_drop``) drawn from a seeded RNG.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CHAT_ROUTES = ("chat_completions", "chat", "context")


@dataclass
class FaultConfig:
    """Faults of one run; every field can be set by flag, environment or the admin endpoint."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    first_token_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    # Generation time after the first token: a default answer arrives after first_token_ms + answer_ms; a
    # stream spreads its chunks over answer_ms (unless chunk_delay_ms paces them).
    answer_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_drop: float = 0.0
    retry_after: float | None = None
    # The share of injected 429/503 answers that carry ``retry_after`` (the service sends it on some only).
    retry_after_rate: float = 1.0
    drop_after_chunks: int = 3
    text_plain_errors: bool = False
    stream_done: bool = False
    seed: int | None = None
    routes: list[str] = field(default_factory=lambda: list(CHAT_ROUTES))
    # Answer shape for large-answer benchmarks (OpenAI-compatible route): the answer repeated N times,
    # and stream content merged into chunks of at least this many characters (0: one word per chunk).
    answer_repeat: int = 1
    stream_chunk_chars: int = 0
    assistants: list[str] | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, Any], base: FaultConfig | None = None) -> FaultConfig:
        """Build from JSON-ish values over ``base``; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        merged = asdict(base) if base else {}
        merged.update(values)
        return cls(**merged)


@dataclass(frozen=True)
class Decision:
    """What to do to one request."""

    delay_s: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    drop: str | None = None  # "response" or "stream"
    drop_after_chunks: int = 3


class Faults:
    """Thread-safe holder of the current config, the script and the RNG."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._script: list[dict[str, Any]] = []
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the config and reseed."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def push(self, entries: list[dict[str, Any]]) -> None:
        """Append scripted faults; each may carry ``route``, ``assistant`` and ``count``."""
        for entry in entries:
            allowed = {"status", "retry_after", "drop", "after_chunks", "route", "assistant", "count", "delay_ms"}
            unknown = set(entry) - allowed
            if unknown:
                raise ValueError(f"unknown scripted fault keys: {', '.join(sorted(unknown))}")
            if "status" not in entry and "drop" not in entry and "delay_ms" not in entry:
                raise ValueError("a scripted fault needs status, drop or delay_ms")
        with self._lock:
            for entry in entries:
                for _ in range(int(entry.get("count", 1))):
                    self._script.append(entry)

    def clear(self) -> None:
        """Forget the script and reset the config."""
        with self._lock:
            self._script.clear()
        self.configure(FaultConfig())

    def snapshot(self) -> dict[str, Any]:
        """Config and pending script, for the admin endpoint."""
        with self._lock:
            return {"config": asdict(self.config), "script": list(self._script)}

    def decide(self, route: str, assistant: str | None) -> Decision:
        """The fault for one request (or none)."""
        with self._lock:
            config = self.config
            for i, entry in enumerate(self._script):
                if entry.get("route", route) == route and entry.get("assistant", assistant) == assistant:
                    if "route" not in entry and route not in config.routes:
                        continue
                    del self._script[i]
                    return Decision(
                        delay_s=float(entry.get("delay_ms", 0)) / 1000,
                        status=entry.get("status"),
                        retry_after=entry.get("retry_after"),
                        drop=entry.get("drop"),
                        drop_after_chunks=int(entry.get("after_chunks", config.drop_after_chunks)),
                    )
            if route not in config.routes or (config.assistants is not None and assistant not in config.assistants):
                return Decision()
            delay = config.latency_ms + (
                self._rng.uniform(0, config.latency_jitter_ms) if config.latency_jitter_ms else 0
            )
            draw = self._rng.random()
            status = None
            for rate, code in ((config.rate_429, 429), (config.rate_500, 500), (config.rate_503, 503)):
                if draw < rate:
                    status = code
                    break
                draw -= rate
            retry_after = None
            # The draw is made only for a share below 1, so seeded runs without one are unchanged.
            with_retry_after = config.retry_after_rate >= 1.0 or self._rng.random() < config.retry_after_rate
            if status in (429, 503) and config.retry_after is not None and with_retry_after:
                retry_after = config.retry_after
            drop = None
            if status is None and config.rate_drop and self._rng.random() < config.rate_drop:
                drop = "any"
            return Decision(
                delay_s=delay / 1000,
                status=status,
                retry_after=retry_after,
                drop=drop,
                drop_after_chunks=config.drop_after_chunks,
            )
