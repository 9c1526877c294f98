"""The emulator in a child process (``python -m infra.emulator``), for stacks and benchmarks that must not
share an interpreter (and its GIL) with the code under test. Same ``url``/``api_key`` as EmulatorServer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.emulator.plan import PlanConfig
from infra.emulator.server import DEFAULT_API_KEY

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PLAN = PlanConfig.of("standard")


class EmulatorProcess:
    """Start with ``start()``; faults, plan and counters are reached over HTTP (``/_emulator/...``).

    Like the command, it runs on the Standard plan with realistic latency unless told otherwise
    (``plan=PlanConfig.of("none"), latency="none"``: unlimited and instant); ``flags`` come last and win.
    """

    def __init__(
        self,
        *,
        docs: str | Path | None,
        assistant: str,
        api_key: str = DEFAULT_API_KEY,
        flags: list[str] | None = None,
        plan: PlanConfig = DEFAULT_PLAN,
        latency: str = "realistic",
    ) -> None:
        self.docs = docs
        self.assistant = assistant
        self.api_key = api_key
        self.flags = [*plan.flags(), "--latency", latency, *(flags or [])]
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> EmulatorProcess:
        """Start and wait until it prints its URL."""
        command = [
            sys.executable,
            "-m",
            "infra.emulator",
            "--port",
            "0",
            "--assistant",
            self.assistant,
            "--api-key",
            self.api_key,
            *self.flags,
        ]
        if self.docs:
            command += ["--docs", str(self.docs)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}
        self._proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError("the emulator did not start")
        return self

    def stop(self) -> None:
        """Stop the child."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
