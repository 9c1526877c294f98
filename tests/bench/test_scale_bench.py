"""Scale: the local pipeline at 100, 1,000 and 10,000 questions (emulator at a fixed 50 ms, no token limit).

Printed (nothing asserted about time): citeq's own time per question (each worker invocation's time minus its
slowest assistant call, per record) against the 100-question run; submission and export time per question
against the size before (linear growth: the ratio stays near 1), and the export's queries alone; the peak
memory of the process running the worker and of the CLI's submit and export (each in its own process, read
from /proc's VmHWM), against the 100-question run. It also prints the invocation counts and durations the
README's cost model is built from.

Each size runs in a child process (its peak memory is then its own). The child prints its figures as soon as
the export is checked, before it stops its stack, and the parent prints and records them (``out/bench.md``)
the moment they arrive: a size that fails to stop its stack, or a later size that never finishes, loses
nothing already measured. While a size drains, the child reports its progress every 30 s; a size stopped at
``CITEQ_SCALE_TIMEOUT`` seconds (default 3600) is recorded as how far it got.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from tests.bench.figures import Figures
from tests.helpers import ROOT

SIZES = [int(n) for n in os.environ.get("CITEQ_SCALE_SIZES", "100,1000,10000").split(",")]
TIMEOUT = float(os.environ.get("CITEQ_SCALE_TIMEOUT", "3600"))
LATENCY_MS = 50

CHILD = r"""
import json, os, subprocess, sys, tempfile, threading, time
from citeq.store import Store
from infra.local import LocalStack
from tests.helpers import Admin

def hwm_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

def say(kind, **values):
    print(json.dumps({"kind": kind, **values}), flush=True)

# The command's own time: main()'s, not the interpreter's start-up and module imports (over a second when the
# machine is busy, more than a small batch's whole submission).
CLI = '''
import sys, time
from citeq.cli import main
started = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - started
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("VmHWM", hwm, seconds, file=sys.stderr)
sys.exit(code)
'''

def cli(*args):
    done = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, check=True)
    _, peak, seconds = done.stderr.strip().splitlines()[-1].split()
    return done.stdout, float(seconds), int(peak)

size, latency = int(sys.argv[1]), float(sys.argv[2])
stack = LocalStack(max_concurrency=5, plan=None, latency="none", reconcile_every=3600).start()
try:
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
        say("submitted", seconds=submit_s)
        store = Store(stack.table)
        started = last = time.perf_counter()
        while True:
            info = store.get_batch(batch_id)
            if info is not None and info.done:
                break
            if time.perf_counter() - last >= 30 and info is not None:
                last = time.perf_counter()
                say("progress", seconds=last - started, finished=info.finished, counts=info.counts)
            time.sleep(0.2)
        drain_s = time.perf_counter() - started
        assert info.counts["succeeded"] == size, info.counts
        say("drained", seconds=drain_s)
        # A trivial command's time (what main() pays at any size: lazy imports, clients, one read), taken off
        # both figures; the least of three, as the machine may be busy.
        startup_s = min(cli("batch", "status", batch_id, "--json")[1] for _ in range(3))
        submit_s = max(0.0, submit_s - startup_s)
        output = os.path.join(tmp, "out.jsonl")
        _, export_s, export_kb = cli("batch", "results", batch_id, "--format", "jsonl", "-o", output)
        export_s = max(0.0, export_s - startup_s)
        with open(output) as handle:
            assert sum(1 for _ in handle) == size
        # The export's reads alone (the same queries, nothing written): how much of the export is the table's.
        started = time.perf_counter()
        latency_ms = {i.request_id: i.latency_ms or 0 for i in store.iter_batch(batch_id)}
        read_s = time.perf_counter() - started
    with lock:
        own = sum(seconds - max(latency_ms.get(r, 0) for r in ids) / 1000 for seconds, ids in invocations)
        lambda_s = sum(seconds for seconds, _ in invocations)
        count = len(invocations)
    say("figures", size=size, submit_s=submit_s, submit_kb=submit_kb, drain_s=drain_s, export_s=export_s,
        export_kb=export_kb, read_s=read_s, own_ms_per_q=own / size * 1000, worker_kb=hwm_kb(),
        worker_before_kb=before, invocations=count, records=stack.poller.stats.records, lambda_s=lambda_s,
        startup_s=startup_s, assistant_ms_per_q=sum(latency_ms.values()) / size)
finally:
    started = time.perf_counter()
    stack.stop()
    say("stopped", seconds=time.perf_counter() - started)
"""


class Child:
    """One size's child process: its stdout's JSON lines arrive on a queue as they are printed."""

    def __init__(self, size: int, stderr: IO[str]) -> None:
        env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}"}
        self.stderr = stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(size), str(LATENCY_MS)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=ROOT, env=env,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def messages(self, deadline: float) -> Any:
        """Each message until the child closes its stdout or ``deadline`` (monotonic) passes."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.lines.get(timeout=left)
            except queue.Empty:
                return
            if message is None:
                return
            yield message

    def end(self, grace: float = 30) -> tuple[int | None, str]:
        """The child's exit code (None: still running after ``grace`` seconds, so killed) and its stderr's tail."""
        try:
            code: int | None = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            code = None
            self.proc.kill()
            self.proc.wait()
        self.stderr.seek(0)
        return code, self.stderr.read()[-3000:]


def _ratio(value: float, base: float) -> float | None:
    return value / base if base else None


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _per(run: dict[str, Any], key: str) -> float:
    return float(run[key]) / run["size"]


def _line(run: dict[str, Any], base: dict[str, Any], prev: dict[str, Any]) -> str:
    size = run["size"]
    return (
        f"[scale] {size:>6} questions: drained in {run['drain_s']:.1f} s; citeq's own time "
        f"{run['own_ms_per_q']:.1f} ms/question ({_x(_ratio(run['own_ms_per_q'], base['own_ms_per_q']))}, goal "
        f"within 20%); submit {run['submit_s']:.1f} s = {_per(run, 'submit_s') * 1000:.2f} ms/question "
        f"({_x(_ratio(_per(run, 'submit_s'), _per(prev, 'submit_s')))} per question against {prev['size']:,}); "
        f"export {run['export_s']:.1f} s = {_per(run, 'export_s') * 1000:.2f} ms/question "
        f"({_x(_ratio(_per(run, 'export_s'), _per(prev, 'export_s')))}), of which the batch's queries alone "
        f"{_per(run, 'read_s') * 1000:.2f} ms/question ({_x(_ratio(_per(run, 'read_s'), _per(prev, 'read_s')))}); "
        f"peak memory: worker process "
        f"{run['worker_kb'] / 1024:.0f} MB ({_x(_ratio(run['worker_kb'], base['worker_kb']))}), CLI submit "
        f"{run['submit_kb'] / 1024:.0f} MB ({_x(_ratio(run['submit_kb'], base['submit_kb']))}), CLI export "
        f"{run['export_kb'] / 1024:.0f} MB ({_x(_ratio(run['export_kb'], base['export_kb']))}); "
        f"{run['invocations']:.0f} worker invocations, {run['lambda_s']:.1f} s of invocation time "
        f"({_per(run, 'lambda_s') * 1000:.0f} ms per question), assistant {run['assistant_ms_per_q']:.0f} "
        f"ms/question; a trivial CLI command's main() {run['startup_s']:.2f} s (taken off submit and export)"
    )


def _record(figures: Figures, run: dict[str, Any], base: dict[str, Any], prev: dict[str, Any]) -> None:
    """Own time, memory and invocation time against the smallest size; submission and export per question
    against the size before (linear growth keeps both near 1; the larger baseline is the less noisy one)."""
    at = f"{run['size']:,}"
    figures.add(f"scale: citeq's own time per question at {at}", f"{run['own_ms_per_q']:.1f} ms",
                f"{base['own_ms_per_q']:.1f} ms at {base['size']:,}", _ratio(run["own_ms_per_q"], base["own_ms_per_q"]),
                "within 20% (0.8-1.2)")
    for key, what in (("submit_s", "submission"), ("export_s", "export"), ("read_s", "export's queries alone,")):
        figures.add(f"scale: {what} time per question at {at}", f"{_per(run, key) * 1000:.2f} ms",
                    f"{_per(prev, key) * 1000:.2f} ms at {prev['size']:,}", _ratio(_per(run, key), _per(prev, key)),
                    "linear (~1 or less)")
    for key, what in (("worker_kb", "worker process"), ("submit_kb", "CLI submit"), ("export_kb", "CLI export")):
        figures.add(f"scale: {what} peak memory at {at}", f"{run[key] / 1024:.0f} MB",
                    f"{base[key] / 1024:.0f} MB at {base['size']:,}", _ratio(run[key], base[key]), "flat (~1)")
    figures.add(f"scale: worker invocation time per question at {at}", f"{_per(run, 'lambda_s') * 1000:.0f} ms",
                f"{_per(base, 'lambda_s') * 1000:.0f} ms at {base['size']:,}",
                _ratio(_per(run, "lambda_s"), _per(base, "lambda_s")), "flat (the GB-s in the cost model)")


def test_scale_own_time_flat_submission_and_export_linear_memory_flat(figures: Figures) -> None:
    print(f"\n[scale] emulator at {LATENCY_MS} ms per answer, no token limit, C = 5 invocations x 5 records")
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    for size in SIZES:
        with tempfile.TemporaryFile(mode="w+") as errors:
            child = Child(size, errors)
            started = time.monotonic()
            run: dict[str, Any] | None = None
            last: dict[str, Any] = {}
            stop_s = 0.0
            for message in child.messages(started + TIMEOUT):
                kind = message.pop("kind")
                if kind == "figures":
                    run = message
                    base, prev = (runs or [run])[0], (runs or [run])[-1]
                    print(_line(run, base, prev), flush=True)
                    if runs:
                        _record(figures, run, base, prev)
                    runs.append(run)
                elif kind == "stopped":
                    stop_s = message["seconds"]
                    print(f"[scale] {size:>6}: the stack stopped in {stop_s:.1f} s", flush=True)
                else:
                    last = message
                    print(f"[scale] {size:>6}: {kind} {json.dumps(message)}", flush=True)
            code, stderr = child.end()
        if stop_s > 5 and stderr.strip():  # moto's process dumps its threads' stacks when slow to stop
            print(f"[scale] {size:>6}: slow stop; the child's stderr:\n{stderr}", flush=True)
        if run is None:
            got = f"{last.get('finished', 0):,} of {size:,} answered after {time.monotonic() - started:.0f} s"
            why = "stopped at the timeout" if code is None else f"child exited {code}"
            problems.append(f"{size:,}: {why}; {got}; stderr: {stderr.strip().splitlines()[-1:] or ''}")
            figures.add(f"scale: {size:,} questions", f"not finished: {got}", "", None, why)
            print(f"[scale] {size:>6}: {problems[-1]}\n{stderr}", flush=True)
            break
        if code != 0:  # measured and recorded above; stopping the stack failed
            problems.append(f"{size:,}: the stack's teardown failed (exit {code}): {stderr}")
            print(f"[scale] {size:>6}: {problems[-1]}", flush=True)
    assert not problems, problems
