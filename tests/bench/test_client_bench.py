"""Client speed and memory: parsing, streaming overhead, and a 10 MB stream's peak memory."""

from __future__ import annotations

import re
import time
import tracemalloc
from collections.abc import Callable

import requests

from citeq.citations import TextDelta, parse_content, render_content
from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.models import Citation, FileRef, ParsedContent, Reference
from tests.bench.emulator_process import API_KEY, emulator_process
from tests.bench.figures import Figures

QUESTION = "What does a request over the rate limit receive?"
_STRIP = re.compile(r" ?\[\d+(?:, pp?\.\s*[\d,\s-]+)?\]")


def _best(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _big_answer(markers: int = 5000, size: int = 1_000_000) -> str:
    files = [FileRef(f"report-{n:02d}.pdf", f"https://x/report-{n:02d}.pdf?X-Goog-Expires=3600") for n in range(20)]
    sentence = "The quarterly review found that the retention policy reduced storage costs noticeably"
    text = ""
    citations = []
    per = size // markers
    for n in range(markers):
        piece = (sentence + " " + "and more detail " * 40)[: per - 1] + "."
        text += piece + " "
        citations.append(Citation(len(text) - 2, (Reference(files[n % 20], (n % 30 + 1, n % 30 + 2)),)))
    return render_content(ParsedContent(text, tuple(citations), tuple(files)))


def test_parse_1mb_with_5000_markers_against_bare_re_sub(figures: Figures) -> None:
    content = _big_answer()
    parsed = parse_content(content)
    assert len(parsed.citations) == 5000
    body = content.split("\n\nReferences:\n")[0]
    assert _STRIP.sub("", body) == parsed.text  # the baseline does the same stripping
    baseline = _best(lambda: _STRIP.sub("", body))
    ours = _best(lambda: parse_content(content))
    print(
        f"\n[parse] {len(content) / 1e6:.2f} MB, 5000 markers: parse_content {ours * 1000:.1f} ms, "
        f"bare re.sub {baseline * 1000:.1f} ms -> speed {baseline / ours:.2f}x of re.sub (target >= 0.5)"
    )
    figures.add("parse_content, 1 MB with 5,000 markers (speed)", f"{ours * 1000:.1f} ms",
                f"bare re.sub {baseline * 1000:.1f} ms", baseline / ours, ">= 0.5")


def _client(url: str) -> AssistantClient:
    return AssistantClient(Settings.from_env({}, api_key=API_KEY, pinecone_host=url, assistant="bench"))


def test_stream_through_client_versus_raw_iter_lines(figures: Figures) -> None:
    with emulator_process("--answer-repeat", "300") as url:
        client = _client(url)
        endpoint = f"{client.host_for('bench')}/assistant/chat/bench/chat/completions"
        session = requests.Session()

        def raw() -> int:
            with session.post(
                endpoint,
                headers={"Api-Key": API_KEY},
                stream=True,
                timeout=30,
                json={"messages": [{"content": QUESTION}], "stream": True},
            ) as response:
                return sum(1 for line in response.iter_lines() if line)

        def ours() -> int:
            with client.stream(QUESTION) as stream:
                return sum(1 for _ in stream.events())

        lines = raw()
        ours()
        raw_time, our_time = _best(raw, 5), _best(ours, 5)
    print(
        f"\n[stream] {lines} SSE chunks: raw iter_lines {raw_time * 1000:.0f} ms, client.stream + citation events "
        f"{our_time * 1000:.0f} ms -> {our_time / raw_time:.2f}x (target <= 1.2)"
    )
    figures.add("client.stream + citation events (time)", f"{our_time * 1000:.0f} ms",
                f"raw iter_lines {raw_time * 1000:.0f} ms", our_time / raw_time, "<= 1.2")


def test_10mb_stream_peak_memory_grows_by_chunks_not_answer_size(figures: Figures) -> None:
    with emulator_process("--stream-chunk-chars", "4096") as url:
        client = _client(url)
        client.host_for("bench")

        def consume(repeat: int) -> tuple[int, int, int]:
            shape = {"answer_repeat": repeat, "stream_chunk_chars": 4096}
            requests.patch(f"{url}/_emulator/faults", json=shape, timeout=5).raise_for_status()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            received = markers = 0
            with client.stream(QUESTION, keep_text=False) as stream:
                for event in stream.events():
                    if isinstance(event, TextDelta):
                        received += len(event.text)
                    else:
                        markers += 1
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            return received, markers, peak

        small_size, _, small_peak = consume(1)
        received, markers, peak = consume(48_000)
    growth = peak - small_peak
    print(
        f"\n[memory] baseline: a {small_size}-character answer peaks at {small_peak / 1024:.0f} KB over idle"
        f"\n[memory] a {received / 1e6:.1f} MB answer ({markers} citation markers, ~4 KB chunks) peaks at "
        f"{peak / 1024:.0f} KB -> grows by {growth / 1024:.0f} KB = {growth / 4096:.1f} chunks "
        f"({growth / received * 100:.2f}% of the answer's size)"
    )
    figures.add(f"{received / 1e6:.0f} MB streamed answer, peak memory", f"{peak / 1024:.0f} KB",
                f"{small_size}-char answer {small_peak / 1024:.0f} KB", peak / max(1, small_peak),
                f"grows by a few 4 KB chunks (+{growth / 4096:.1f})")
