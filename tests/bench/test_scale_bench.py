"""Scale: the local pipeline at 100, 1,000 and 10,000 questions (emulator at a fixed 50 ms, no token limit).

Printed (nothing asserted about time): citeq's own time per question (each worker invocation's time minus its
slowest assistant call, per record) against the 100-question run; submission and export time per question
(linear growth: the ratio stays near 1); the peak memory of the process running the worker and of the CLI's
submit and export (each in its own process, read from /proc's VmHWM), against the 100-question run. It also
prints the AWS request counts and durations the README's cost model is built from.

Each size runs in a child process (its peak memory is then its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bench.figures import Figures
from tests.helpers import ROOT

SIZES = [int(n) for n in os.environ.get("CITEQ_SCALE_SIZES", "100,1000,10000").split(",")]
LATENCY_MS = 50

CHILD = r"""
import json, os, subprocess, sys, tempfile, threading, time
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import Admin

def hwm_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

CLI = '''
import sys
from citeq.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("VmHWM", hwm, file=sys.stderr)
sys.exit(code)
'''

def cli(*args):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak = int(done.stderr.strip().splitlines()[-1].split()[1])
    return done.stdout, seconds, peak

size, latency = int(sys.argv[1]), float(sys.argv[2])
with LocalStack(max_concurrency=5, plan=None, latency="none", reconcile_every=3600) as stack:
    Admin(stack.emulator.url).faults(latency_ms=latency)
    invocations = []
    lock = threading.Lock()
    handler = stack.poller.handler
    def timed(event, context):
        started = time.perf_counter()
        try:
            return handler(event, context)
        finally:
            ids = [json.loads(r["body"])["request_id"] for r in event["Records"]]
            with lock:
                invocations.append((time.perf_counter() - started, ids))
    stack.poller.handler = timed
    with tempfile.TemporaryDirectory() as tmp:
        questions = os.path.join(tmp, "questions.jsonl")
        with open(questions, "w") as handle:
            for n in range(size):
                question = f"What does a request over the rate limit receive? ({n})"
                handle.write(json.dumps({"custom_id": f"q{n}", "question": question}) + "\n")
        before = hwm_kb()
        out, submit_s, submit_kb = cli("batch", "submit", questions, "--format", "jsonl")
        batch_id = out.split()[0]
        store = Store(stack.table)
        started = time.perf_counter()
        while True:
            info = store.get_batch(batch_id)
            if info is not None and info.done:
                break
            time.sleep(0.2)
        drain_s = time.perf_counter() - started
        assert info.counts["succeeded"] == size, info.counts
        # A trivial command's time: the interpreter and imports every CLI run pays, taken off both figures.
        _, startup_s, _ = cli("batch", "status", batch_id, "--json")
        submit_s = max(0.0, submit_s - startup_s)
        output = os.path.join(tmp, "out.jsonl")
        _, export_s, export_kb = cli("batch", "results", batch_id, "--format", "jsonl", "-o", output)
        export_s = max(0.0, export_s - startup_s)
        with open(os.path.join(tmp, "out.jsonl")) as handle:
            assert sum(1 for _ in handle) == size
        latency_ms = {i.request_id: i.latency_ms or 0 for i in store.iter_batch(batch_id)}
    own = sum(seconds - max(latency_ms.get(r, 0) for r in ids) / 1000 for seconds, ids in invocations)
    lambda_s = sum(seconds for seconds, _ in invocations)
    stats = stack.poller.stats
    print(json.dumps({
        "size": size, "submit_s": submit_s, "submit_kb": submit_kb, "drain_s": drain_s, "export_s": export_s,
        "export_kb": export_kb, "own_ms_per_q": own / size * 1000, "worker_kb": hwm_kb(), "worker_before_kb": before,
        "invocations": len(invocations), "records": stats.records, "lambda_s": lambda_s,
        "assistant_ms_per_q": sum(latency_ms.values()) / size,
    }))
"""


def _run(size: int) -> dict[str, float]:
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(LATENCY_MS)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600, check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    if done.returncode != 0:  # the figures were measured; stopping the stack failed (say so, keep them)
        print(f"\n[scale] {size}: the stack's teardown failed: {done.stderr.strip().splitlines()[-1]}")
    return dict(json.loads(lines[-1]))


@pytest.fixture(scope="module")
def runs() -> dict[int, dict[str, float]]:
    return {size: _run(size) for size in SIZES}


def test_scale_own_time_flat_submission_and_export_linear_memory_flat(
    runs: dict[int, dict[str, float]], figures: Figures
) -> None:
    base = runs[SIZES[0]]
    print(f"\n[scale] emulator at {LATENCY_MS} ms per answer, no token limit, C = 5 invocations x 5 records")
    for size, run in runs.items():
        print(
            f"[scale] {size:>6} questions: drained in {run['drain_s']:.1f} s; citeq's own time "
            f"{run['own_ms_per_q']:.1f} ms/question ({run['own_ms_per_q'] / base['own_ms_per_q']:.2f}x, goal within "
            f"20%); submit {run['submit_s']:.1f} s = {run['submit_s'] / size * 1000:.2f} ms/question "
            f"({run['submit_s'] / size / (base['submit_s'] / SIZES[0]):.2f}x per question); export "
            f"{run['export_s']:.1f} s = {run['export_s'] / size * 1000:.2f} ms/question "
            f"({run['export_s'] / size / (base['export_s'] / SIZES[0]):.2f}x); peak memory: worker process "
            f"{run['worker_kb'] / 1024:.0f} MB ({run['worker_kb'] / base['worker_kb']:.2f}x), CLI submit "
            f"{run['submit_kb'] / 1024:.0f} MB ({run['submit_kb'] / base['submit_kb']:.2f}x), CLI export "
            f"{run['export_kb'] / 1024:.0f} MB ({run['export_kb'] / base['export_kb']:.2f}x); "
            f"{run['invocations']:.0f} worker invocations, {run['lambda_s']:.1f} s of invocation time "
            f"({run['lambda_s'] / size * 1000:.0f} ms per question), "
            f"assistant {run['assistant_ms_per_q']:.0f} ms/question"
        )
    for size in SIZES[1:]:
        run = runs[size]
        figures.add(f"citeq's own time per question at {size:,}", f"{run['own_ms_per_q']:.1f} ms",
                    f"{base['own_ms_per_q']:.1f} ms at {SIZES[0]}", run["own_ms_per_q"] / base["own_ms_per_q"],
                    "within 20% (0.8-1.2)")
        per = (run["submit_s"] / size) / (base["submit_s"] / SIZES[0])
        figures.add(f"submission time per question at {size:,}", f"{run['submit_s'] / size * 1000:.2f} ms",
                    f"{base['submit_s'] / SIZES[0] * 1000:.2f} ms at {SIZES[0]}", per, "linear (~1 or less)")
        per = (run["export_s"] / size) / (base["export_s"] / SIZES[0])
        figures.add(f"export time per question at {size:,}", f"{run['export_s'] / size * 1000:.2f} ms",
                    f"{base['export_s'] / SIZES[0] * 1000:.2f} ms at {SIZES[0]}", per, "linear (~1 or less)")
        for key, what in (("worker_kb", "worker process"), ("submit_kb", "CLI submit"), ("export_kb", "CLI export")):
            figures.add(f"{what} peak memory at {size:,}", f"{run[key] / 1024:.0f} MB",
                        f"{base[key] / 1024:.0f} MB at {SIZES[0]}", run[key] / base[key], "flat (~1)")
