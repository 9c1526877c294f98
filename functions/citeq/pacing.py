"""Pacing assistant calls to the plan's chat-input-token limit (issue 10): the interface the worker uses.

The DynamoDB-backed budget shared by every worker is ``citeq.budget.TokenBudget``; ``Unpaced`` is the
pacer for runs without a limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Slot:
    """The answer to "may this request call the assistant now?": go (``wait_until`` None) or wait until
    ``wait_until`` (epoch seconds; the slot is reserved for then) because of ``reason``."""

    wait_until: float | None = None
    reason: str = ""


class Pacer(Protocol):
    """Decides when each assistant call may be made, and learns from what the calls cost."""

    def acquire(self, assistant: str, request_id: str) -> Slot:
        """Reserve budget for one call of ``request_id`` now, or say until when it must wait."""

    def settle(self, assistant: str, request_id: str, prompt_tokens: int) -> None:
        """Correct the reservation with the call's real prompt tokens."""

    def release(self, assistant: str, request_id: str) -> None:
        """Give back a reservation that was not used for a call the service counted."""

    def throttled(self, assistant: str, request_id: str, retry_after: float | None) -> tuple[float, str]:
        """The service answered 429: slow down; returns (epoch seconds the request may run again, reason)."""

    def pause(self, assistant: str, request_id: str, reason: str) -> tuple[float, str]:
        """The service answered 403 (a quota): pause the assistant; returns (when to probe again, reason)."""


class Unpaced:
    """A pacer without a limit: every call may go at once; a 429 waits its Retry-After (or 5 s)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall

    def acquire(self, assistant: str, request_id: str) -> Slot:
        """Always go."""
        return Slot()

    def settle(self, assistant: str, request_id: str, prompt_tokens: int) -> None:
        """Nothing to correct."""

    def release(self, assistant: str, request_id: str) -> None:
        """Nothing to give back."""

    def throttled(self, assistant: str, request_id: str, retry_after: float | None) -> tuple[float, str]:
        """Wait the service's Retry-After, or 5 s."""
        wait = 5.0 if retry_after is None else max(1.0, float(retry_after))
        return self.wall() + wait, f"rate limited by the assistant (429); retrying in {wait:.0f}s"

    def pause(self, assistant: str, request_id: str, reason: str) -> tuple[float, str]:
        """Wait five minutes before trying again."""
        return self.wall() + 300.0, f"assistant paused after a quota answer (403): {reason}"
