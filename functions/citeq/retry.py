"""The retry policy as two pure functions: ``should_retry`` and ``retry_delay``.

Retryable: transport errors (connect, timeout, dropped), 408, 409, 429 and 5xx — see ``errors``. A 200 whose
body cannot be read (``MalformedResponse``, ``TruncatedResponse``) is never re-asked in-process: the service
has already spent that answer's tokens, outside the worker's pacing; a truncated one goes back to the caller,
retryable (the worker hands the message back with its own backoff, bounded by ``max_receives``).
Delay: the service's ``Retry-After`` when it sent one, else capped exponential backoff with full jitter:
``uniform(0, min(cap, base * 2 ** (attempt - 1)))``. A ``Retry-After`` longer than ``max_retry_after`` is not
waited out in-process: the error goes to the caller (the worker hands such a request back to SQS with that
delay, which costs nothing while it waits).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from citeq.errors import CiteqError, MalformedResponse, RateLimitError


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    # False: a 429 goes straight to the caller (the worker paces and puts the request off instead).
    retry_rate_limits: bool = True


def should_retry(error: CiteqError, attempt: int, policy: RetryPolicy) -> bool:
    """Whether to make attempt ``attempt + 1`` after ``error`` ended attempt ``attempt`` (1-based)."""
    if isinstance(error, RateLimitError) and not policy.retry_rate_limits:
        return False
    if isinstance(error, MalformedResponse):
        return False
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and retry_after > policy.max_retry_after:
        return False
    return error.retryable and attempt < policy.max_attempts


def retry_delay(error: CiteqError, attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait after attempt ``attempt`` failed with ``error``."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(max(0.0, float(retry_after)), policy.max_retry_after)
    return rng.uniform(0.0, min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)))
