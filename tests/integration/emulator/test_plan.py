"""The plan as a client sees it over HTTP: 429 over the tokens-per-minute limit (no Retry-After), 403 over a
quota, prompt tokens that carry the injected context, the admin endpoint and the command line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI

from infra.emulator import Backend, EmulatorServer
from infra.emulator.__main__ import fault_config, parse_args, plan_config
from infra.emulator.plan import PlanConfig
from infra.emulator.process import EmulatorProcess
from infra.local.stack import LocalStack
from tests.helpers import ASSISTANT, SAMPLE_DOCS, Admin, Clock

QUESTION = [{"role": "user", "content": "Which header tells a client how long to wait after HTTP 429?"}]
RATE_LIMITED = {
    "error": {"code": "TOO_MANY_REQUESTS", "message": "Too many chat input tokens per minute, try again later"},
    "status": 429,
}


@pytest.fixture(scope="module")
def planned() -> Iterator[tuple[EmulatorServer, Clock]]:
    """An emulator of its own (its clock is the test's), on no plan until a test sets one."""
    clock = Clock(1_780_000_000.0)
    backend = Backend(clock=clock)
    with EmulatorServer(backend) as server:
        backend.load_directory(ASSISTANT, SAMPLE_DOCS)
        yield server, clock


@pytest.fixture
def server(planned: tuple[EmulatorServer, Clock]) -> Iterator[EmulatorServer]:
    Admin(planned[0].url).reset()
    yield planned[0]
    Admin(planned[0].url).reset()


@pytest.fixture
def clock(planned: tuple[EmulatorServer, Clock]) -> Clock:
    return planned[1]


def _client(server: EmulatorServer) -> OpenAI:
    return OpenAI(api_key=server.api_key, base_url=f"{server.url}/assistant/chat/{ASSISTANT}", max_retries=0)


def _post(server: EmulatorServer, route: str = "/chat/completions", **body: Any) -> requests.Response:
    return requests.post(
        f"{server.url}/assistant/chat/{ASSISTANT}{route}",
        headers={"Api-Key": server.api_key},
        json={"messages": QUESTION, **body},
        timeout=10,
    )


def test_over_the_limit_is_429_with_the_services_body_and_no_retry_after(server: EmulatorServer) -> None:
    admin = Admin(server.url)
    admin.plan(tokens_per_minute=25_000, context_tokens=10_000)
    assert [_post(server).status_code for _ in range(2)] == [200, 200]
    refused = _post(server)
    assert refused.status_code == 429
    assert refused.json() == RATE_LIMITED
    assert "Retry-After" not in refused.headers
    assert admin.count("chat_completions", status="429") == 1
    assert admin.plan()["usage"]["rejected_429"] == 1


def test_openai_sdk_sees_a_rate_limit_error_with_the_body(server: EmulatorServer) -> None:
    Admin(server.url).plan(tokens_per_minute=1_000)
    client = _client(server)
    client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    assert refused.value.status_code == 429
    assert refused.value.body == RATE_LIMITED["error"]
    assert refused.value.response.headers.get("retry-after") is None


def test_window_refills_as_charges_leave_the_last_minute(server: EmulatorServer, clock: Clock) -> None:
    Admin(server.url).plan(tokens_per_minute=25_000, context_tokens=10_000)
    assert _post(server).status_code == 200
    clock.now += 30
    assert _post(server).status_code == 200
    assert _post(server).status_code == 429
    clock.now += 30  # the first answer's tokens have left the window; the second's have not
    assert _post(server).status_code == 200
    assert _post(server).status_code == 429
    clock.now += 60
    assert [_post(server).status_code for _ in range(2)] == [200, 200]


def test_standard_chat_draws_from_the_same_window_and_context_does_not(server: EmulatorServer) -> None:
    admin = Admin(server.url)
    admin.plan(tokens_per_minute=15_000, context_tokens=10_000)
    assert _post(server, "").status_code == 200
    context = requests.post(
        f"{server.url}/assistant/chat/{ASSISTANT}/context",
        headers={"Api-Key": server.api_key},
        json={"query": "rate limit"},
        timeout=10,
    )
    assert context.status_code == 200
    assert _post(server, "").json() == RATE_LIMITED
    assert _post(server).status_code == 429
    assert (admin.count("chat", status="429"), admin.count("chat_completions", status="429")) == (1, 1)


def test_quota_is_403_and_stays_after_the_window_refills(server: EmulatorServer, clock: Clock) -> None:
    admin = Admin(server.url)
    admin.plan(plan="starter", quota_input_tokens=25_000, context_tokens=10_000)
    assert [_post(server).status_code for _ in range(2)] == [200, 200]
    clock.now += 3_600
    refused = _post(server)
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "code": "QUOTA_EXCEEDED",
            "message": "Request failed. You've reached the max chat input tokens allowed in organization "
            "citeq-emulator. To increase this quota, upgrade your plan.",
        },
        "status": 403,
    }
    with pytest.raises(openai.PermissionDeniedError):
        _client(server).chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    assert admin.count("chat_completions", status="403") == 2
    admin.reset()
    assert _post(server).status_code == 200


def test_prompt_tokens_carry_the_context_and_match_between_stream_and_default(server: EmulatorServer) -> None:
    client = _client(server)
    default = client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True))  # type: ignore[arg-type]
    streamed = chunks[-1].usage
    assert default.usage is not None and streamed is not None
    assert 9_000 < default.usage.prompt_tokens < 26_000
    assert streamed.model_dump() == default.usage.model_dump()
    charged = Admin(server.url).plan()["assistants"][ASSISTANT]
    assert charged["input_tokens"] == 2 * default.usage.prompt_tokens
    assert charged["output_tokens"] == 2 * default.usage.completion_tokens


def test_prompt_tokens_differ_by_question_and_measured_mode_is_small(server: EmulatorServer) -> None:
    def prompt(question: str) -> int:
        body = {"messages": [{"role": "user", "content": question}]}
        response = requests.post(
            f"{server.url}/assistant/chat/{ASSISTANT}", headers={"Api-Key": server.api_key}, json=body, timeout=10
        )
        return int(response.json()["usage"]["prompt_tokens"])

    questions = ["How many days of paid time off?", "What does a 429 mean?", "How fast is a breach reported?"]
    drawn = [prompt(q) for q in questions]
    assert len(set(drawn)) == 3 and drawn == [prompt(q) for q in questions]
    Admin(server.url).plan(context_tokens="measured")
    assert all(prompt(q) < 5_000 for q in questions)


def test_answer_latency_applies_to_chats_only(server: EmulatorServer) -> None:
    # Ten minutes of "generation": a describe, a file list or a context call that waited for it would time out.
    Admin(server.url).faults(first_token_ms=600_000, answer_ms=1)
    headers = {"Api-Key": server.api_key}
    for path in (f"/assistant/assistants/{ASSISTANT}", f"/assistant/files/{ASSISTANT}"):
        assert requests.get(f"{server.url}{path}", headers=headers, timeout=5).status_code == 200
    context = requests.post(
        f"{server.url}/assistant/chat/{ASSISTANT}/context", headers=headers, json={"query": "rate limit"}, timeout=5
    )
    assert context.status_code == 200


def test_admin_rejects_unknown_plan_settings(server: EmulatorServer) -> None:
    response = requests.patch(f"{server.url}/_emulator/plan", json={"plan": "gold"}, timeout=5)
    assert response.status_code == 400
    assert "gold" in response.json()["error"]["message"]


def test_command_line_defaults_to_the_standard_plan_realistic_tokens_and_latency() -> None:
    args = parse_args([])
    assert plan_config(args) == PlanConfig.of("standard")
    assert plan_config(args).context_tokens == (9_000, 25_000)
    faults = fault_config(args)
    assert (faults.first_token_ms, faults.answer_ms) == (900, 600)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--plan", "starter"], PlanConfig.of("starter")),
        (["--tokens-per-minute", "20000"], PlanConfig.of("standard", tokens_per_minute=20_000)),
        (["--plan", "none", "--context-tokens", "measured"], PlanConfig.of("none", context_tokens="measured")),
        (
            ["--plan", "starter", "--quota-input-tokens", "0", "--quota-output-tokens", "50"],
            PlanConfig.of("starter", quota_input_tokens=0, quota_output_tokens=50),
        ),
        (["--context-tokens", "12000"], PlanConfig.of("standard", context_tokens=12_000)),
    ],
)
def test_command_line_plan_flags(argv: list[str], expected: PlanConfig) -> None:
    assert plan_config(parse_args(argv)) == expected


def test_command_line_plan_from_environment_and_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_PLAN", "enterprise")
    monkeypatch.setenv("EMULATOR_TOKENS_PER_MINUTE", "5000")
    assert plan_config(parse_args([])) == PlanConfig.of("enterprise", tokens_per_minute=5_000)
    assert plan_config(parse_args(["--plan", "starter"])).tokens_per_minute == 5_000
    assert plan_config(parse_args(["--tokens-per-minute", "7"])).tokens_per_minute == 7


@pytest.mark.parametrize(
    ("argv", "first", "answer"), [(["--latency", "none"], 0, 0), (["--first-token-ms", "50"], 50, 600)]
)
def test_command_line_latency_profile_and_overrides(argv: list[str], first: float, answer: float) -> None:
    faults = fault_config(parse_args(argv))
    assert (faults.first_token_ms, faults.answer_ms) == (first, answer)


def test_command_line_rejects_a_bad_context_range() -> None:
    with pytest.raises(SystemExit):
        plan_config(parse_args(["--context-tokens", "9..1"]))


def test_process_and_local_stack_pass_their_plan_as_flags() -> None:
    process = EmulatorProcess(
        docs=None, assistant="a", plan=PlanConfig.of("starter", tokens_per_minute=3), latency="none"
    )
    args = parse_args(process.flags)
    assert plan_config(args) == PlanConfig.of("starter", tokens_per_minute=3)
    assert fault_config(args).first_token_ms == 0
    assert plan_config(parse_args(EmulatorProcess(docs=None, assistant="a").flags)) == PlanConfig.of("standard")
    assert LocalStack().plan == PlanConfig.of("standard")
    tiny = LocalStack(plan="starter", tokens_per_minute=20_000, context_tokens=None)
    assert (tiny.plan.plan, tiny.plan.tokens_per_minute, tiny.plan.context_tokens) == ("starter", 20_000, None)
    assert LocalStack(plan=None).plan.tokens_per_minute is None


def test_server_constructor_plan_is_the_one_a_reset_returns_to() -> None:
    backend = Backend(plan=PlanConfig.of("builder"))
    assert backend.plan.config == PlanConfig.of("builder")
    with EmulatorServer(backend, plan=PlanConfig.of("starter", tokens_per_minute=1_000)) as server:
        admin = Admin(server.url)
        assert admin.plan(plan="enterprise")["tokens_per_minute"] == 1_000_000
        admin.reset()
        state = admin.plan()
        assert (state["plan"], state["tokens_per_minute"], state["quota_input_tokens"]) == ("starter", 1_000, 500_000)
