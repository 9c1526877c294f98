"""Shared fixtures: fake AWS credentials, a session emulator on 127.0.0.1 with the sample documents."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

# Fake credentials before anything creates a boto3 client: tests must never reach real AWS.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "1",
    "POWERTOOLS_TRACE_DISABLED": "1",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)

from infra.emulator import Backend, EmulatorServer  # noqa: E402
from tests.helpers import ASSISTANT, SAMPLE_DOCS, Admin  # noqa: E402


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the session, holding the sample documents in assistant ``citeq-demo``."""
    backend = Backend()
    with EmulatorServer(backend) as server:
        backend.load_directory(ASSISTANT, SAMPLE_DOCS)
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator with faults cleared and counters zeroed for this test."""
    Admin(emulator_server.url).reset()
    yield emulator_server
    Admin(emulator_server.url).reset()


@pytest.fixture
def admin(emulator: EmulatorServer) -> Admin:
    """Admin client of the (reset) session emulator."""
    return Admin(emulator.url)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto in process, with the queues and tables of template.yaml; yields logical -> physical ids."""
    import boto3
    from moto import mock_aws

    from infra.local.atomic import make_dynamodb_atomic
    from infra.local.template import create_resources, load, local_resources

    make_dynamodb_atomic()
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        resources = create_resources(
            local_resources(load()),
            cloudformation=boto3.client("cloudformation"),
            dynamodb=boto3.client("dynamodb"),
            stack_name="citeq-test",
        )
        yield resources


@pytest.fixture
def worker_env(aws: dict[str, str], emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The worker's environment pointing at moto's resources and the emulator."""
    env = {
        "CITEQ_TABLE": aws["ResultsTable"],
        "CITEQ_QUEUE_URL": aws["RequestsQueue"],
        "CITEQ_DLQ_URL": aws["RequestsDeadLetterQueue"],
        "CITEQ_ASSISTANT": ASSISTANT,
        "CITEQ_PINECONE_HOST": emulator.url,
        "PINECONE_API_KEY": emulator.api_key,
        "CITEQ_MAX_RECEIVES": "6",
        "CITEQ_WORKER_CONCURRENCY": "10",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def dispatch(worker_env: dict[str, str]) -> Callable[[], None]:
    """Run the dispatcher over the table's stream so far (sends the messages and callback jobs owed)."""
    from tests.helpers import stream_drain

    return stream_drain(worker_env["CITEQ_TABLE"])
