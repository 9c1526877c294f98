"""Run the emulator in a child process, so a benchmark measures only the client's time and memory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import ROOT, SAMPLE_DOCS

API_KEY = "bench-key"


@contextmanager
def emulator_process(*flags: str, assistant: str = "bench") -> Iterator[str]:
    """Start ``python -m infra.emulator`` on a free loopback port with the sample docs; yields its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.emulator",
            "--port",
            "0",
            "--docs",
            str(SAMPLE_DOCS),
            "--assistant",
            assistant,
            "--api-key",
            API_KEY,
            *flags,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"emulator did not start: {url!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
