"""Shared fixtures: fake AWS credentials, a session emulator on 127.0.0.1 with the sample documents."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
