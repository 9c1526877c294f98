"""Emulator speed: ingest of a ~20 MB, 2,000-file corpus; chat latency at that size (no injected latency)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import requests

from infra.emulator import Backend, EmulatorServer
from tests.bench.corpus import write_corpus
from tests.bench.figures import Figures


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def test_emulator_ingest_and_chat_latency(tmp_path: Path, figures: Figures) -> None:
    total = write_corpus(tmp_path / "corpus", files=2000, bytes_per_file=10_000)
    # Baseline: just reading and splitting the same bytes.
    start = time.perf_counter()
    words = sum(len(p.read_text().split()) for p in (tmp_path / "corpus").iterdir())
    baseline = time.perf_counter() - start

    backend = Backend()
    start = time.perf_counter()
    loaded = backend.load_directory("bench", tmp_path / "corpus")
    ingest = time.perf_counter() - start
    assert len(loaded) == 2000

    with EmulatorServer(backend) as server, requests.Session() as http:
        headers = {"Api-Key": server.api_key}
        url = f"{server.url}/assistant/chat/bench/chat/completions"
        health = []
        for _ in range(200):
            t = time.perf_counter()
            http.get(f"{server.url}/_emulator/health", timeout=5).raise_for_status()
            health.append(time.perf_counter() - t)
        latencies = []
        for n in range(300):
            question = f"Which export job retries term{n * 37 % 20000} and term{n * 11 % 20000}?"
            t = time.perf_counter()
            response = http.post(url, json={"messages": [{"content": question}]}, headers=headers, timeout=10)
            latencies.append(time.perf_counter() - t)
            assert response.status_code == 200
    p50, p99 = _percentile(latencies, 50) * 1000, _percentile(latencies, 99) * 1000
    base50 = statistics.median(health) * 1000
    print(
        f"\n[emulator] corpus {total / 1e6:.1f} MB, 2000 files, {words} words"
        f"\n[emulator] ingest {ingest:.2f} s (target <= 10 s); read+split baseline {baseline:.2f} s "
        f"-> {ingest / baseline:.1f}x"
        f"\n[emulator] chat p50 {p50:.1f} ms (target <= 20), p99 {p99:.1f} ms (target <= 60); "
        f"HTTP round-trip baseline p50 {base50:.2f} ms -> p50 {p50 / base50:.1f}x"
    )
    figures.add("emulator ingest, 2,000 files", f"{ingest:.2f} s", f"read + split {baseline:.2f} s", ingest / baseline,
                "<= 10 s")
    figures.add("emulator chat p50 / p99 at that size", f"{p50:.1f} / {p99:.1f} ms", f"HTTP round trip {base50:.2f} ms",
                p50 / base50, "<= 20 / 60 ms")
