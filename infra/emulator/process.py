"""The emulator in a child process (``python -m infra.emulator``), for stacks and benchmarks that must not
share an interpreter (and its GIL) with the code under test. Same ``url``/``api_key`` as EmulatorServer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

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
        processing_seconds: float = 0.0,
    ) -> None:
        self.docs = docs
        self.assistant = assistant
        self.api_key = api_key
        # Files are Available at once by default (tests and benchmarks stay fast); the program's own default
        # is the realistic delay, which the local stack asks for when the demo runs.
        self.flags = [
            *plan.flags(),
            "--latency",
            latency,
            "--processing-seconds",
            str(processing_seconds),
            *(flags or []),
        ]
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

    def wait_until_available(self, timeout: float = 120.0, interval: float = 0.25) -> int:
        """Wait until every file of the assistant is Available (as a client must before chatting); their count."""
        deadline = time.monotonic() + timeout
        url = f"{self.url}/assistant/files/{self.assistant}"
        with requests.Session() as http:
            while True:
                response = http.get(url, headers={"Api-Key": self.api_key}, timeout=10)
                response.raise_for_status()
                statuses = [f["status"] for f in response.json()["files"]]
                if "ProcessingFailed" in statuses:
                    raise RuntimeError(f"a file of {self.assistant!r} failed to process")
                if all(status == "Available" for status in statuses):
                    return len(statuses)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"files of {self.assistant!r} still processing after {timeout:g}s")
                time.sleep(interval)

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
