"""Fault injection as a client sees it, and the per-route, per-assistant counters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from infra.emulator import EmulatorServer
from infra.emulator.__main__ import fault_config, parse_args
from infra.emulator.models import REALISTIC_PROCESSING_SECONDS
from tests.helpers import ASSISTANT, ROOT, Admin

QUESTION = {"messages": [{"role": "user", "content": "What is the Growth plan rate limit?"}]}


def _chat(emulator: EmulatorServer, stream: bool = False, **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{emulator.url}/assistant/chat/{ASSISTANT}/chat/completions",
        headers={"Api-Key": emulator.api_key},
        json={**QUESTION, "stream": stream},
        timeout=10,
        stream=stream,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("status", "retry_after", "header"), [(429, 2, "2"), (429, None, None), (503, 0.5, "0.5"), (500, None, None)]
)
def test_scripted_status_then_success(
    emulator: EmulatorServer, admin: Admin, status: int, retry_after: float | None, header: str | None
) -> None:
    entry: dict[str, Any] = {"status": status}
    if retry_after is not None:
        entry["retry_after"] = retry_after
    admin.script(entry)
    failed = _chat(emulator)
    assert failed.status_code == status
    assert failed.headers.get("Retry-After") == header
    assert failed.json()["status"] == status
    assert _chat(emulator).status_code == 200
    assert admin.count("chat_completions") == 2
    assert admin.count("chat_completions", status=str(status)) == 1


def test_text_plain_errors_still_carry_json(emulator: EmulatorServer, admin: Admin) -> None:
    admin.faults(text_plain_errors=True)
    admin.script({"status": 429})
    response = _chat(emulator)
    assert response.headers["content-type"].startswith("text/plain")
    assert json.loads(response.text)["error"]["code"] == "TOO_MANY_REQUESTS"


def test_dropped_response_breaks_the_body(emulator: EmulatorServer, admin: Admin) -> None:
    admin.script({"drop": "response"})
    with pytest.raises(requests.exceptions.RequestException):
        _chat(emulator).json()


def test_dropped_stream_delivers_some_chunks_then_breaks(emulator: EmulatorServer, admin: Admin) -> None:
    admin.script({"drop": "stream", "after_chunks": 3})
    received = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError), _chat(emulator, stream=True) as response:
        for line in response.iter_lines():
            if line:
                received.append(line)
    assert len(received) == 3


def test_slow_first_token_arrives_after_headers(emulator: EmulatorServer, admin: Admin) -> None:
    admin.faults(first_token_ms=300)
    start = time.perf_counter()
    with _chat(emulator, stream=True) as response:
        headers_at = time.perf_counter() - start
        next(line for line in response.iter_lines() if line)
        first_at = time.perf_counter() - start
    assert first_at >= 0.3
    assert first_at > headers_at


def test_fixed_latency_delays_every_chat(emulator: EmulatorServer, admin: Admin) -> None:
    admin.faults(latency_ms=200)
    start = time.perf_counter()
    assert _chat(emulator).status_code == 200
    assert time.perf_counter() - start >= 0.2


def test_rates_with_a_seed_repeat_exactly(emulator: EmulatorServer, admin: Admin) -> None:
    def run() -> list[int]:
        admin.faults(rate_429=0.3, rate_500=0.2, seed=7)
        return [_chat(emulator).status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {429, 500, 200} <= set(first)


def test_faults_scoped_to_an_assistant_spare_others(emulator: EmulatorServer, admin: Admin) -> None:
    admin.faults(rate_503=1.0, assistants=["someone-else"])
    assert _chat(emulator).status_code == 200


def test_counters_split_by_route_and_assistant(emulator: EmulatorServer, admin: Admin) -> None:
    _chat(emulator)
    requests.get(f"{emulator.url}/assistant/assistants/{ASSISTANT}", headers={"Api-Key": emulator.api_key}, timeout=5)
    requests.post(
        f"{emulator.url}/assistant/chat/other/chat/completions",
        headers={"Api-Key": emulator.api_key},
        json=QUESTION,
        timeout=5,
    )
    counters = admin.counters()
    assert counters["chat_completions"][ASSISTANT] == {"total": 1, "200": 1}
    assert counters["chat_completions"]["other"] == {"total": 1, "404": 1}
    assert counters["describe_assistant"][ASSISTANT]["total"] == 1


def test_admin_rejects_unknown_fault_setting(emulator: EmulatorServer) -> None:
    response = requests.put(f"{emulator.url}/_emulator/faults", json={"rate_4299": 1}, timeout=5)
    assert response.status_code == 400
    assert "rate_4299" in response.json()["error"]["message"]


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMULATOR_RATE_429", "0.25")
    monkeypatch.setenv("EMULATOR_LATENCY_MS", "5")
    config = fault_config(parse_args(["--latency-ms", "40", "--retry-after", "3", "--stream-done"]))
    assert (config.rate_429, config.latency_ms, config.retry_after, config.stream_done) == (0.25, 40, 3, True)


def test_command_line_preloads_docs_and_prints_url(tmp_path: Any) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.emulator",
            "--port",
            "0",
            "--docs",
            str(ROOT / "samples" / "docs"),
            "--assistant",
            "cli-docs",
            "--api-key",
            "k",
            "--state-dir",
            str(tmp_path),
            "--processing-seconds",
            "600",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        files = requests.get(f"{url}/assistant/files/cli-docs", headers={"Api-Key": "k"}, timeout=5).json()["files"]
        assert len(files) == 5
        assert all(f["status"] == "Processing" for f in files)
        chat = requests.post(
            f"{url}/assistant/chat/cli-docs/chat/completions",
            headers={"Api-Key": "k"},
            json={"messages": [{"content": "What is the PTO policy?"}]},
            timeout=5,
        )
        assert chat.status_code == 400
        assert chat.json()["error"]["message"] == "Assistant doesn't contain any files"
    finally:
        proc.terminate()
        proc.wait(10)
    assert (tmp_path / "cli-docs" / "assistant.json").exists()


def test_command_line_default_processing_delay_is_realistic_not_zero() -> None:
    assert parse_args([]).processing_seconds == REALISTIC_PROCESSING_SECONDS >= 1
