"""``python -m infra.emulator --port N --docs DIR [--assistant NAME] [plan flags] [fault flags]``.

Every plan and fault flag can also be set as ``EMULATOR_<FLAG>`` in the environment (``EMULATOR_RATE_429=0.2``,
``EMULATOR_PLAN=starter``); a flag wins over the environment. By default the emulator behaves like the service
on the Standard plan: 300k chat input tokens a minute, 9k-25k prompt tokens per answer, answers in about 1.5 s
(``--plan none --latency none`` for an unlimited, instant one).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import fields
from typing import Any

from infra.emulator.faults import FaultConfig
from infra.emulator.models import REALISTIC_PROCESSING_SECONDS, Backend
from infra.emulator.plan import PLANS, PlanConfig
from infra.emulator.server import DEFAULT_API_KEY, EmulatorServer
from infra.lifetime import exit_with_parent

_FAULT_FLAGS: dict[str, tuple[type, str]] = {
    "latency_ms": (float, "added latency per request, ms"),
    "latency_jitter_ms": (float, "extra random latency in [0, N) ms"),
    "seed": (int, "seed for random latency and error draws"),
    "first_token_ms": (float, "delay before the first token (stream) or the response (default)"),
    "chunk_delay_ms": (float, "pacing between stream chunks, ms"),
    "answer_ms": (float, "generation time after the first token, ms (a stream's chunks are spread over it)"),
    "rate_429": (float, "fraction of chat requests answered 429"),
    "rate_500": (float, "fraction answered 500"),
    "rate_503": (float, "fraction answered 503"),
    "rate_drop": (float, "fraction whose connection is dropped mid-response or mid-stream"),
    "retry_after": (float, "Retry-After seconds sent with 429/503 (absent if unset)"),
    "retry_after_rate": (float, "share of injected 429/503 answers that carry --retry-after (default 1)"),
    "drop_after_chunks": (int, "stream chunks sent before a drop"),
    "answer_repeat": (int, "repeat each answer N times (large-answer benchmarks)"),
    "stream_chunk_chars": (int, "merge stream content into chunks of at least N characters"),
}

# First-token and generation latency of the "realistic" default: about 1.5 s an answer (issue 10's figure; real
# answers with 9k-25k-token prompts take seconds, shared reference §7.3). "none": the instant emulator of the tests.
LATENCY_PROFILES: dict[str, dict[str, float]] = {
    "realistic": {"first_token_ms": 900.0, "answer_ms": 600.0},
    "none": {},
}
DEFAULT_PLAN = "standard"


def _env_default(name: str, kind: type) -> Any:
    raw = os.environ.get(f"EMULATOR_{name.upper()}")
    if raw is None:
        return None
    if kind is bool:
        return raw.lower() in ("1", "true", "yes")
    return kind(raw)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags over environment over defaults."""
    parser = argparse.ArgumentParser(prog="python -m infra.emulator", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMULATOR_PORT", "0")))
    parser.add_argument(
        "--eu-port",
        type=int,
        default=int(os.environ.get("EMULATOR_EU_PORT", "0")),
        help="port of the eu region's data-plane host (0: a free one)",
    )
    parser.add_argument("--docs", help="directory whose files are uploaded to the assistant at start")
    parser.add_argument("--assistant", default=os.environ.get("CITEQ_ASSISTANT", "citeq-demo"))
    parser.add_argument("--api-key", default=os.environ.get("PINECONE_API_KEY", DEFAULT_API_KEY))
    parser.add_argument("--state-dir", default=os.environ.get("EMULATOR_STATE_DIR"))
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=float(os.environ.get("EMULATOR_PROCESSING_SECONDS", REALISTIC_PROCESSING_SECONDS)),
        help="seconds an upload stays Processing before it is Available (0: at once)",
    )
    parser.add_argument(
        "--wire",
        choices=("2024", "2025", "current"),
        default=os.environ.get("EMULATOR_WIRE", "current"),
        help="which of the service's known wire variants to send (markers, References, stream framing)",
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the starting process is gone")
    plan = parser.add_argument_group("plan", "the service's token limits (0 means unlimited)")
    plan.add_argument("--plan", choices=sorted(PLANS), default=os.environ.get("EMULATOR_PLAN", DEFAULT_PLAN))
    for name, help_text in (
        ("tokens_per_minute", "chat input tokens per minute, in place of the plan's"),
        ("quota_input_tokens", "chat input tokens for the whole run, in place of the plan's monthly quota"),
        ("quota_output_tokens", "chat output tokens for the whole run, in place of the plan's monthly quota"),
    ):
        plan.add_argument(f"--{name.replace('_', '-')}", type=int, default=_env_default(name, int), help=help_text)
    plan.add_argument(
        "--context-tokens",
        default=os.environ.get("EMULATOR_CONTEXT_TOKENS", "9000..25000"),
        help="prompt tokens of the injected context: LOW..HIGH (drawn per question), N, or 'measured'",
    )
    parser.add_argument(
        "--latency",
        choices=sorted(LATENCY_PROFILES),
        default=os.environ.get("EMULATOR_LATENCY", "realistic"),
        help="default first-token and answer latency (each latency flag overrides its part)",
    )
    for name, (kind, help_text) in _FAULT_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=_env_default(name, kind), help=help_text)
    parser.add_argument("--text-plain-errors", action="store_true", default=_env_default("text_plain_errors", bool))
    parser.add_argument(
        "--stream-done",
        action="store_true",
        default=_env_default("stream_done", bool),
        help="end streams with data: [DONE] (the service does not)",
    )
    return parser.parse_args(argv)


def fault_config(args: argparse.Namespace) -> FaultConfig:
    """The FaultConfig named by the flags that were set."""
    names = {f.name for f in fields(FaultConfig)}
    values = {**LATENCY_PROFILES[args.latency]}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return FaultConfig.from_mapping(values)


def plan_config(args: argparse.Namespace) -> PlanConfig:
    """The PlanConfig named by the plan flags."""
    try:
        return PlanConfig.of(
            args.plan,
            tokens_per_minute=args.tokens_per_minute,
            quota_input_tokens=args.quota_input_tokens,
            quota_output_tokens=args.quota_output_tokens,
            context_tokens=args.context_tokens,
        )
    except ValueError as exc:
        raise SystemExit(f"python -m infra.emulator: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """Start the emulator and serve until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    backend = Backend(
        processing_seconds=args.processing_seconds,
        wire=args.wire,
        state_dir=args.state_dir,
        plan=plan_config(args),
    )
    server = EmulatorServer(
        backend, host=args.host, port=args.port, api_key=args.api_key, faults=fault_config(args), eu_port=args.eu_port
    )
    if args.docs:
        loaded = backend.load_directory(args.assistant, args.docs)
        print(f"loaded {len(loaded)} files into assistant {args.assistant!r}", file=sys.stderr)
    else:
        backend.ensure_assistant(args.assistant)
    stop = threading.Event()
    if args.exit_with_parent:
        exit_with_parent(stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"eu region data plane: {server.eu_url}", file=sys.stderr)
    print(server.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
