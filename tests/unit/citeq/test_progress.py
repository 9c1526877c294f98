"""Batch status figures with pacing: tokens against the limit, deferred requests, pauses, the budget's ETA
(time injected: every figure is computed at a given ``now``)."""

from __future__ import annotations

import json

import pytest

from citeq.budget import BudgetState
from citeq.models import BatchInfo, Unfinished
from citeq.progress import Pacing, Progress, reason_kind

NOW = 1_800_000_000.0
WAITING = "waiting for token budget (19,400 input tokens/min)"
THROTTLED = "rate limited (429): pacing cut to 9,700 input tokens/min"


def _info(counts: dict[str, int], state: str = "submitted", **extra: str) -> BatchInfo:
    return BatchInfo("b1", sum(counts.values()), counts, state, "2027-01-15T08:00:00Z", NOW - 100, **extra)


def _budget(**changes: object) -> BudgetState:
    state = BudgetState(
        limit=20_000,
        slots={"a": [NOW - 50, 9_000.0], "b": [NOW - 10, 8_000.0], "c": [NOW + 30, 10_000.0], "old": [NOW - 61, 5.0]},
        samples=[9_000, 8_000, 10_000],
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def _unfinished() -> list[Unfinished]:
    return [
        *[Unfinished("queued", "help", NOW + 5 + n, WAITING) for n in range(4)],
        *[Unfinished("queued", "help", NOW + 20, THROTTLED) for _ in range(2)],
        Unfinished("queued", "help", NOW - 1, WAITING),  # its time has come: no longer deferred
        Unfinished("queued", "help"),
        Unfinished("running", "help"),
        Unfinished("running", "help"),
    ]


COUNTS = {"queued": 8, "running": 2, "succeeded": 30, "failed": 0, "cancelled": 0}


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (WAITING, "waiting for token budget"),
        (THROTTLED, "rate limited (429)"),
        ("assistant paused: quota answer (403): Request failed.", "assistant paused"),
        ("token budget unavailable", "token budget unavailable"),
        ("waiting for token budget (5,820 input tokens per 6 s)", "waiting for token budget"),
        ("rate limited (429): pacing cut to 4,074 input tokens per 6 s", "rate limited (429)"),
        ("rate limited by the assistant (429); retrying in 5s", "rate limited by the assistant (429); retrying in 5s"),
    ],
)
def test_reason_kind_drops_the_changing_details(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_pacing_counts_only_requests_whose_time_is_still_ahead_as_deferred() -> None:
    pacing = Pacing.of(_unfinished(), {"help": _budget()}, NOW)
    assert pacing.deferred == 6
    assert pacing.reasons == [("waiting for token budget", 4), ("rate limited (429)", 2)]
    assert pacing.remaining == {"help": 10}


def test_status_with_pacing_shows_budget_line_deferred_and_budget_eta() -> None:
    pacing = Pacing.of(_unfinished(), {"help": _budget()}, NOW)
    view = Progress(_info(COUNTS), 100.0, pacing)
    # 10 remaining x 9,000 tokens (the mean of the samples) / 19,400 a minute (97% of 20,000) x 60 s.
    assert view.eta == pytest.approx(10 * 9_000 / 19_400 * 60)
    assert view.eta_from_rate == pytest.approx(10 / 0.3)
    assert view.summary().splitlines() == [
        "batch b1  (submitted, created 2027-01-15T08:00:00Z)",
        "total 40: queued 8, running 2, succeeded 30, failed 0, cancelled 0",
        "deferred 6 (waiting for token budget 4, rate limited (429) 2)",
        "budget help: 17,000 of 20,000 input tokens/min used, pacing at 19,400; ~9,000 tokens a call "
        "(mean of 3 calls); 10,000 reserved ahead",
        "rate 0.30/s, ETA 4m38s from the token budget",
    ]


def test_status_shows_a_cut_rate_and_a_pause_and_waits_out_the_pause_in_the_eta() -> None:
    reason = "quota answer (403): Request failed. You've reached the max chat input tokens"
    budget = _budget(cut_rate=9_700.0, cut_at=NOW - 60, throttles=3, paused_until=NOW + 200, pause_reason=reason)
    pacing = Pacing.of([Unfinished("queued", "help", NOW + 200, f"assistant paused: {reason}")], {"help": budget}, NOW)
    view = Progress(_info({**COUNTS, "queued": 1, "running": 0}), 100.0, pacing)
    lines = view.summary().splitlines()
    # Halved to 9,700 a minute ago, grown back by 10% of the limit since.
    assert lines[3].startswith("budget help: 17,000 of 20,000 input tokens/min used, pacing at 11,700 (cut after a 429")
    assert lines[4] == f"paused help: {reason}; probed at 08:03:20Z (in 3m20s)"
    assert view.eta == pytest.approx(200 + 9_000 / 11_700 * 60)
    body = view.to_dict()["pacing"]
    assert body["assistants"][0]["paused_until"] == NOW + 200
    assert body["assistants"][0]["effective_tokens"] == 11_700
    assert body["wait_reasons"] == [{"reason": "assistant paused", "count": 1}]


def test_status_json_carries_the_pacing_figures() -> None:
    pacing = Pacing.of(_unfinished(), {"help": _budget()}, NOW)
    body = json.loads(json.dumps(Progress(_info(COUNTS), 100.0, pacing).to_dict()))
    assert (body["eta_basis"], body["eta_s"], body["incomplete"]) == ("budget", 278.4, False)
    assert body["pacing"] == {
        "deferred": 6,
        "wait_reasons": [
            {"reason": "waiting for token budget", "count": 4},
            {"reason": "rate limited (429)", "count": 2},
        ],
        "assistants": [
            {
                "assistant": "help",
                "remaining": 10,
                "window_s": 60.0,
                "limit_tokens": 20_000,
                "used_tokens": 17_000,
                "effective_tokens": 19_400,
                "reserved_ahead_tokens": 10_000,
                "estimate_tokens": 9_000,
                "samples": 3,
                "throttles": 0,
                "paused_until": None,
                "pause_reason": None,
                "eta_s": 278.4,
            }
        ],
        "eta_s": 278.4,
    }


def test_a_short_test_window_is_named_and_scales_the_eta() -> None:
    budget = BudgetState(limit=6_000, window=10.0)
    pacing = Pacing.of([Unfinished("queued", "help", NOW + 3, WAITING)], {"help": budget}, NOW)
    line = pacing.lines()[1]
    assert line.startswith("budget help: 0 of 6,000 input tokens per 10 s window used, pacing at 5,820")
    assert line.endswith("~15,000 tokens a call (default until calls report)")
    assert pacing.eta == pytest.approx(15_000 / 5_820 * 10)


def test_the_slowest_assistant_sets_the_eta() -> None:
    pacing = Pacing.of(
        [Unfinished("queued", "a"), Unfinished("queued", "b"), Unfinished("queued", "b")],
        {"a": _budget(), "b": _budget()},
        NOW,
    )
    assert pacing.eta == pytest.approx(pacing.eta_of("b") or 0) and pacing.eta == pytest.approx(2 * pacing.eta_of("a"))


def test_a_done_batch_shows_no_pacing_and_no_eta() -> None:
    done = _info({"queued": 0, "running": 0, "succeeded": 40, "failed": 0, "cancelled": 0})
    view = Progress(done, 100.0, Pacing.of([], {"help": _budget()}, NOW))
    assert view.summary().splitlines()[-1] == "rate 0.40/s, done"
    assert "pacing" not in view.to_dict() and view.to_dict()["eta_s"] == 0.0


@pytest.mark.parametrize(
    ("extra", "command"),
    [
        ({"source": "questions.jsonl", "idempotency_key": "nightly-7:9f2c41d0"}, "citeq batch submit questions.jsonl "
         "--idempotency-key nightly-7"),
        ({"source": "questions.csv"}, "citeq batch submit questions.csv"),
        ({}, "citeq batch submit FILE"),
    ],
)
def test_an_incomplete_batch_says_how_to_finish_it(extra: dict[str, str], command: str) -> None:
    view = Progress(_info(COUNTS, state="submitting", **extra), 100.0)
    assert f"to finish it, run the same command again: {command}" in view.summary()
    assert view.to_dict()["incomplete"] is True and view.to_dict()["finish_with"] == command


def test_a_submitted_batch_is_not_called_incomplete() -> None:
    view = Progress(_info(COUNTS), 100.0)
    assert "incomplete" not in view.summary() and "finish_with" not in view.to_dict()
    assert view.to_dict()["eta_basis"] == "rate"
