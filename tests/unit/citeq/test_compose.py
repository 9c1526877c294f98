"""The composition root: what ``Factory`` builds from which settings (nothing here calls AWS or the service)."""

from __future__ import annotations

import pytest

from citeq.budget import TokenBudget
from citeq.compose import WORKER_MAX_ATTEMPTS, Factory
from citeq.config import Settings
from citeq.errors import ConfigurationError
from citeq.pacing import Unpaced
from citeq.worker import NoMetrics

CONFIGURED = {
    "CITEQ_TABLE": "results",
    "CITEQ_QUEUE_URL": "https://sqs/requests",
    "CITEQ_DLQ_URL": "https://sqs/dlq",
    "PINECONE_API_KEY": "pcsk_compose_test",
    "CITEQ_RESULT_TTL_DAYS": "7",
    "CITEQ_MAX_RECEIVES": "4",
}


def _factory(**environ: str) -> Factory:
    return Factory(Settings.from_env({**CONFIGURED, **environ}))


def test_the_worker_is_wired_from_the_settings_and_unpaced_without_a_token_limit() -> None:
    worker = _factory().worker()
    assert worker.store.table == "results" and worker.store.ttl_seconds == 7 * 86400
    assert worker.queue.url == "https://sqs/requests" and worker.queue.dlq_url == "https://sqs/dlq"
    assert worker.max_receives == 4
    assert isinstance(worker.pacer, Unpaced) and isinstance(worker.recorder, NoMetrics)
    # Retries in process are few and never for 429s: the pacer puts a rate-limited request off.
    assert worker.client.policy.max_attempts == WORKER_MAX_ATTEMPTS
    assert worker.client.policy.retry_rate_limits is False


def test_a_paced_worker_draws_from_a_budget_in_its_own_store() -> None:
    worker = _factory(CITEQ_TOKENS_PER_MINUTE="standard", CITEQ_TOKEN_WINDOW_SECONDS="6").worker()
    assert isinstance(worker.pacer, TokenBudget)
    assert worker.pacer.store is worker.store


@pytest.mark.parametrize(("configured", "attempts"), [("1", 1), ("2", 2), ("5", WORKER_MAX_ATTEMPTS)])
def test_max_attempts_lowers_the_worker_s_attempts_but_never_raises_them_past_its_cap(
    configured: str, attempts: int
) -> None:
    assert _factory(CITEQ_MAX_ATTEMPTS=configured).worker().client.policy.max_attempts == attempts


def test_the_cli_s_client_keeps_the_configured_attempts() -> None:
    assert _factory(CITEQ_MAX_ATTEMPTS="7").client().policy.max_attempts == 7


def test_the_dispatcher_sends_callbacks_only_when_their_queue_is_configured() -> None:
    assert _factory().dispatcher().callbacks is None
    dispatcher = _factory(CITEQ_CALLBACK_QUEUE_URL="https://sqs/callbacks").dispatcher()
    assert dispatcher.requests.url == "https://sqs/requests"
    assert dispatcher.callbacks is not None and dispatcher.callbacks.url == "https://sqs/callbacks"


def test_the_deliverer_records_in_the_results_table_and_allows_the_configured_hosts() -> None:
    deliverer = _factory(CITEQ_CALLBACK_ALLOW_HOSTS="hooks.internal").deliverer(lambda: "unused")
    assert deliverer.store.table == "results" and deliverer.allow_hosts == ("hooks.internal",)


def test_no_budget_without_a_token_limit() -> None:
    assert _factory().budget() is None


@pytest.mark.parametrize(
    ("build", "missing"),
    [
        (Factory.store, "CITEQ_TABLE"),
        (Factory.queue, "CITEQ_QUEUE_URL"),
        (Factory.callback_queue, "CITEQ_CALLBACK_QUEUE_URL"),
        (Factory.client, "PINECONE_API_KEY"),
        (Factory.worker, "CITEQ_TABLE"),
        (Factory.dispatcher, "CITEQ_QUEUE_URL"),
    ],
)
def test_each_collaborator_fails_naming_the_variable_it_needs(build: object, missing: str) -> None:
    environ = {name: value for name, value in CONFIGURED.items() if name != missing}
    with pytest.raises(ConfigurationError, match=missing):
        build(Factory(Settings.from_env(environ)))  # type: ignore[operator]


def test_settings_are_read_from_the_environment_once_when_none_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITEQ_TABLE", "from-the-environment")
    factory = Factory()
    assert factory.store().table == "from-the-environment"
    monkeypatch.setenv("CITEQ_TABLE", "changed-later")
    assert factory.store().table == "from-the-environment"
