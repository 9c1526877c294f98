from __future__ import annotations

import random

import pytest

from citeq.errors import (
    BadRequestError,
    CiteqError,
    ConflictError,
    ConnectionFailed,
    MalformedResponse,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    Timeout,
    TruncatedResponse,
    ValidationError,
)
from citeq.retry import RetryPolicy, retry_delay, should_retry

POLICY = RetryPolicy(max_attempts=4, base_delay=0.5, max_delay=8.0, max_retry_after=30.0)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionFailed("x"), True),
        (Timeout("x"), True),
        (RequestTimeoutError("x", status=408), True),
        (ConflictError("x", status=409), True),
        (RateLimitError("x", status=429), True),
        (ServerError("x", status=500), True),
        (ServerError("x", status=503), True),
        (BadRequestError("x", status=400), False),
        (NotFoundError("x", status=404), False),
        (ValidationError("x"), False),
        # A 200 the client cannot read already cost a whole answer: never re-asked in-process.
        (MalformedResponse("x"), False),
        (TruncatedResponse("x"), False),
    ],
)
def test_should_retry_only_transient_errors(error: CiteqError, retry: bool) -> None:
    assert should_retry(error, 1, POLICY) is retry


def test_should_retry_stops_at_max_attempts() -> None:
    assert should_retry(ServerError("x", status=500), 3, POLICY)
    assert not should_retry(ServerError("x", status=500), 4, POLICY)


@pytest.mark.parametrize(("retry_after", "expected"), [(2.0, 2.0), (0.0, 0.0), (30.0, 30.0), (-5.0, 0.0)])
def test_retry_after_is_honoured(retry_after: float, expected: float) -> None:
    error = RateLimitError("x", status=429, retry_after=retry_after)
    assert should_retry(error, 1, POLICY)
    assert retry_delay(error, 1, POLICY, random.Random(0)) == expected


def test_retry_after_beyond_the_cap_goes_back_to_the_caller() -> None:
    assert not should_retry(RateLimitError("x", status=429, retry_after=30.5), 1, POLICY)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int, ceiling: float) -> None:
    rng = random.Random(42)
    delays = [retry_delay(ServerError("x", status=503), attempt, POLICY, rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.9  # spread over the whole window, not a fixed delay
    assert min(delays) < ceiling * 0.1
