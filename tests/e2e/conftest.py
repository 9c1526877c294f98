"""The whole local stack (moto server, emulator, worker poller) for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from citeq.queue import Queue
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import Admin


@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    """One local stack for the e2e tests. The queue's visibility timeout is cut from 750 s to 6 s so
    redeliveries come back quickly; it still exceeds the longest a record takes here (a few seconds)."""
    # No token limit and an instant assistant: these tests are about delivery, not pacing. The reconciler
    # runs when a test calls stack.reconcile().
    with LocalStack(
        visibility_timeout=6, max_concurrency=4, plan=None, latency="none", reconcile_every=3600
    ) as local:
        yield local


@pytest.fixture
def emu(stack: LocalStack) -> Iterator[Admin]:
    """The stack's emulator, with faults cleared and counters zeroed."""
    assert stack.emulator is not None
    admin = Admin(stack.emulator.url)
    admin.reset()
    yield admin
    admin.reset()


@pytest.fixture
def store(stack: LocalStack) -> Store:
    return Store(stack.table)


@pytest.fixture
def queue(stack: LocalStack) -> Queue:
    return Queue(stack.queue_url, dlq_url=stack.dlq_url)
