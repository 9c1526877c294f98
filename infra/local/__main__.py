"""``python -m infra.local``: run the local stack until interrupted; prints the variables that point at it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from infra.emulator.models import REALISTIC_PROCESSING_SECONDS
from infra.local.stack import SAMPLE_DOCS, LocalStack


def main(argv: list[str] | None = None) -> int:
    """Start the stack and wait."""
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__)
    parser.add_argument("--docs", default=str(SAMPLE_DOCS), help="documents to load into the emulated assistant")
    parser.add_argument("--assistant", default="citeq-demo")
    parser.add_argument("--plan", default="standard", help="the emulated assistant's plan (none: no limit)")
    parser.add_argument("--tokens-per-minute", type=int, help="chat input tokens a minute, in place of the plan's")
    parser.add_argument("--latency", choices=("realistic", "none"), default="realistic")
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=REALISTIC_PROCESSING_SECONDS,
        help="seconds each uploaded file stays Processing in the emulator",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack(
        docs=args.docs,
        assistant=args.assistant,
        plan=args.plan,
        tokens_per_minute=args.tokens_per_minute,
        latency=args.latency,
        processing_seconds=args.processing_seconds,
    ) as stack:
        print("# citeq local stack is up; in another shell:", flush=True)
        print(stack.exports(), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
