"""Run the emulator in a child process, so a benchmark measures only the client's time and memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from infra.emulator.plan import PlanConfig
from infra.emulator.process import EmulatorProcess
from tests.helpers import SAMPLE_DOCS

API_KEY = "bench-key"


@contextmanager
def emulator_process(*flags: str, assistant: str = "bench") -> Iterator[str]:
    """``python -m infra.emulator`` on a free loopback port with the sample docs, no token limit and no latency
    unless ``flags`` ask for them; yields its URL."""
    with EmulatorProcess(
        docs=SAMPLE_DOCS,
        assistant=assistant,
        api_key=API_KEY,
        flags=list(flags),
        plan=PlanConfig.of("none"),
        latency="none",
    ) as process:
        yield process.url
