"""The plan model: limits per plan, the sliding one-minute window, quotas and the context-token draw."""

from __future__ import annotations

from typing import Any

import pytest

from infra.emulator.exceptions import QuotaExceeded, TooManyRequests
from infra.emulator.plan import PLANS, PlanConfig, PlanMeter, parse_context_tokens
from tests.helpers import Clock


def meter(clock: Clock, **limits: Any) -> PlanMeter:
    return PlanMeter(PlanConfig.of(**limits), clock=clock)


@pytest.mark.parametrize(
    ("plan", "per_minute", "quota_in", "quota_out"),
    [
        ("starter", 100_000, 500_000, 300_000),
        ("builder", 200_000, 2_000_000, 1_000_000),
        ("standard", 300_000, None, None),
        ("enterprise", 1_000_000, None, None),
        ("none", None, None, None),
    ],
)
def test_plan_config_of_plan_has_the_documented_limits(
    plan: str, per_minute: int | None, quota_in: int | None, quota_out: int | None
) -> None:
    config = PlanConfig.of(plan)
    assert (config.tokens_per_minute, config.quota_input_tokens, config.quota_output_tokens) == (
        per_minute,
        quota_in,
        quota_out,
    )


def test_plan_config_of_overrides_replace_the_plans_limits_and_zero_means_unlimited() -> None:
    config = PlanConfig.of("starter", tokens_per_minute=20_000, quota_input_tokens=0)
    assert (config.plan, config.tokens_per_minute, config.quota_input_tokens, config.quota_output_tokens) == (
        "starter",
        20_000,
        None,
        300_000,
    )


@pytest.mark.parametrize("bad", [{"plan": "gold"}, {"plan": "none", "tokens_per_minute": -1}])
def test_plan_config_of_unknown_plan_or_negative_limit_is_an_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PlanConfig.of(**bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9000..25000", (9000, 25000)),
        ("12000", (12000, 12000)),
        (12000, (12000, 12000)),
        ([1, 2], (1, 2)),
        ((1, 2), (1, 2)),
        ("measured", None),
        (None, None),
    ],
)
def test_parse_context_tokens_accepts_ranges_fixed_values_and_measured(value: Any, expected: Any) -> None:
    assert parse_context_tokens(value) == expected


@pytest.mark.parametrize("bad", ["25000..9000", "-1", "lots", [1], True])
def test_parse_context_tokens_rejects_nonsense(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_context_tokens(bad)


def test_context_tokens_are_in_range_and_the_same_for_the_same_question() -> None:
    plan = meter(Clock(1_000.0))
    questions = [f"question number {n}?" for n in range(200)]
    drawn = [plan.context_tokens(q, measured=300) for q in questions]
    assert all(9_000 <= d <= 25_000 for d in drawn)
    assert drawn == [plan.context_tokens(q, measured=300) for q in questions]
    assert len(set(drawn)) > 150  # spread over the range, not one value
    assert 14_000 < sum(drawn) / len(drawn) < 20_000


def test_context_tokens_measured_mode_counts_only_the_retrieved_text() -> None:
    assert meter(Clock(1_000.0), context_tokens="measured").context_tokens("q", measured=321) == 321


def test_charge_over_the_limit_is_refused_and_not_charged() -> None:
    plan = meter(Clock(1_000.0), tokens_per_minute=25_000)
    plan.charge("a", 10_000, 50)
    plan.charge("a", 10_000, 50)
    with pytest.raises(TooManyRequests) as refused:
        plan.charge("a", 10_000, 50)
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (429, "TOO_MANY_REQUESTS", None)
    snapshot = plan.snapshot()
    assert snapshot["window_tokens"] == 20_000
    assert snapshot["usage"] == {
        "requests": 2,
        "input_tokens": 20_000,
        "output_tokens": 100,
        "rejected_429": 1,
        "rejected_403": 0,
    }


def test_window_slides_over_the_last_sixty_seconds() -> None:
    clock = Clock(1_000.0)
    plan = meter(clock, tokens_per_minute=25_000)
    plan.charge("a", 10_000, 1)  # t=0
    clock.now += 30
    plan.charge("a", 10_000, 1)  # t=30
    with pytest.raises(TooManyRequests):
        plan.charge("a", 10_000, 1)
    clock.now += 30  # t=60: the first charge has left the window, the second has not
    plan.charge("a", 10_000, 1)
    with pytest.raises(TooManyRequests):
        plan.charge("a", 10_000, 1)
    clock.now += 30  # t=90: the t=30 charge has left
    plan.charge("a", 10_000, 1)


def test_one_request_larger_than_the_limit_passes_an_empty_window_only() -> None:
    clock = Clock(1_000.0)
    plan = meter(clock, tokens_per_minute=5_000)
    plan.charge("a", 9_000, 1)
    with pytest.raises(TooManyRequests):
        plan.charge("a", 1, 1)
    clock.now += 60
    plan.charge("a", 9_000, 1)


def test_limit_is_shared_by_every_assistant_of_the_organization() -> None:
    plan = meter(Clock(1_000.0), tokens_per_minute=15_000)
    plan.charge("a", 10_000, 1)
    with pytest.raises(TooManyRequests):
        plan.charge("b", 10_000, 1)
    assert plan.snapshot()["assistants"]["b"]["rejected_429"] == 1


def test_input_quota_is_403_before_the_rate_limit_and_outlasts_the_window() -> None:
    clock = Clock(1_000.0)
    plan = meter(clock, tokens_per_minute=15_000, quota_input_tokens=25_000)
    plan.charge("a", 10_000, 1)
    clock.now += 60
    plan.charge("a", 10_000, 1)
    clock.now += 600
    with pytest.raises(QuotaExceeded) as refused:
        plan.charge("a", 10_000, 1)
    assert (refused.value.status, refused.value.code) == (403, "QUOTA_EXCEEDED")
    assert "chat input tokens" in refused.value.message
    assert plan.snapshot()["usage"]["rejected_403"] == 1


def test_output_quota_refuses_once_spent() -> None:
    plan = meter(Clock(1_000.0), quota_output_tokens=100)
    plan.charge("a", 10, 100)
    with pytest.raises(QuotaExceeded, match="chat output tokens"):
        plan.charge("a", 10, 1)


def test_admin_patch_put_and_delete() -> None:
    plan = PlanMeter(PlanConfig.of("standard"), clock=Clock(1_000.0))
    assert plan.admin("PATCH", {"tokens_per_minute": 20_000})["tokens_per_minute"] == 20_000
    assert plan.config.plan == "standard" and plan.config.context_tokens == (9_000, 25_000)
    state = plan.admin("PATCH", {"plan": "starter", "context_tokens": "measured"})
    assert (state["tokens_per_minute"], state["quota_input_tokens"], state["context_tokens"]) == (
        100_000,
        500_000,
        None,
    )
    plan.charge("a", 10, 1)
    state = plan.admin("PUT", {"tokens_per_minute": 5})
    assert (state["plan"], state["tokens_per_minute"], state["usage"]["requests"]) == ("none", 5, 1)
    state = plan.admin("DELETE", None)
    assert (state["plan"], state["tokens_per_minute"], state["usage"]["requests"]) == ("standard", 300_000, 0)
    assert state["context_tokens"] == [9_000, 25_000]


@pytest.mark.parametrize(
    ("method", "payload"), [("PATCH", {"tokens": 1}), ("PATCH", []), ("PUT", {"plan": "gold"}), ("POST", {})]
)
def test_admin_rejects_unknown_settings_and_methods(method: str, payload: Any) -> None:
    with pytest.raises(ValueError):
        PlanMeter(PlanConfig(), clock=Clock(1_000.0)).admin(method, payload)


def test_every_plan_round_trips_through_its_command_line_flags() -> None:
    from infra.emulator.__main__ import parse_args, plan_config

    for name in PLANS:
        config = PlanConfig.of(name, tokens_per_minute=20_000, context_tokens="measured")
        assert plan_config(parse_args(config.flags())) == config
