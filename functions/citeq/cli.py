"""The ``citeq`` command. Commands are thin: parse arguments, ask a factory for collaborators, print.

Exit codes: 0 ok, 1 error, 2 usage or configuration, 3 finished with failures (batch commands).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from citeq import batch, dlq, export, sweep
from citeq.callbacks import caller_secret
from citeq.citations import MarkerFound, TextDelta
from citeq.compose import Factory
from citeq.errors import (
    APIStatusError,
    AuthenticationError,
    AWSError,
    CiteqError,
    ConfigurationError,
    NotFoundError,
    TransportError,
    ValidationError,
)
from citeq.models import OPTIONS, Answer, BatchInfo, ChatRequest, Citation, Reference
from citeq.progress import Pacing, Progress
from citeq.text import loads

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILURES = 0, 1, 2, 3
# `ask`'s help for the chat options it knows; an option without a line here gets its name and cell kind.
OPTION_HELP = {
    "model": "model, e.g. gpt-4o (default: the service's)",
    "temperature": "0-2 (default: the service's)",
    "filter": 'metadata filter as JSON, e.g. \'{"kind": "manual"}\'',
    "context_options": "how much context is retrieved, as JSON, e.g. '{\"top_k\": 4}' (prints the whole answer: "
    "the standard chat does not stream it)",
}


def _ref_name(ref: Reference) -> str:
    """How a reference is named in footnotes (a marker missing from the References list says so)."""
    return ref.file.name if ref.file else f"(reference {ref.missing_reference} missing from the list)"


def _footnotes(citations: Sequence[Citation]) -> list[str]:
    """``[n] file, pp. …`` lines, one per cited file, pages merged in order of appearance."""
    lines: dict[int, tuple[str, list[int]]] = {}
    numbers: dict[str, int] = {}
    for citation in citations:
        for ref in citation.references:
            name = _ref_name(ref)
            number = numbers.setdefault(name, len(numbers) + 1)
            pages = lines.setdefault(number, (name, []))[1]
            pages.extend(p for p in ref.pages if p not in pages)
            pages.sort()
    return [
        f"[{n}] {name}" + (f", pp. {', '.join(map(str, pages))}" if pages else "") for n, (name, pages) in lines.items()
    ]


def format_answer(answer: Answer) -> str:
    """Answer text with ``[n]`` footnote marks, then the footnotes."""
    numbers: dict[str, int] = {}
    out: list[str] = []
    cursor = 0
    for citation in answer.citations:
        out.append(answer.content[cursor : citation.position])
        cursor = citation.position
        marks = []
        for ref in citation.references:
            marks.append(f"[{numbers.setdefault(_ref_name(ref), len(numbers) + 1)}]")
        out.append("".join(dict.fromkeys(marks)))
    out.append(answer.content[cursor:])
    notes = _footnotes(answer.citations)
    return "".join(out) + ("\n\n" + "\n".join(notes) if notes else "")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_value(name: str, value: str) -> Any:
    """One ``ask`` option flag's text -> its value, spelled as a CSV cell spells the option (``Option.cell``)."""
    cell = OPTIONS[name].cell
    if cell == "json":
        return loads(value, what=_flag(name))
    if cell == "number":
        try:
            return float(value)
        except ValueError:
            raise ValidationError(f"{_flag(name)} must be a number") from None
    return value


def _ask(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    # Every chat option has its flag (built from OPTIONS), so a new option reaches `ask` with no edit here.
    options = {name: _option_value(name, value) for name in OPTIONS if (value := getattr(args, name)) is not None}
    client = factory.client()
    asked = ChatRequest.parse(
        {"question": args.question, "assistant": args.assistant, **options},
        default_assistant=factory.settings.assistant,
    )
    # An option only the standard chat takes (context_options) has no stream: the whole answer is printed.
    if args.no_stream or args.json or asked.options.standard_only:
        answer = client.chat(asked)
        out.write(json.dumps(answer.to_dict(), indent=2) + "\n" if args.json else format_answer(answer) + "\n")
        return EXIT_OK
    with client.stream(asked) as stream:
        numbers: dict[int, int] = {}
        for event in stream.events():
            if isinstance(event, TextDelta):
                out.write(event.text)
            elif isinstance(event, MarkerFound):
                out.write("".join(f"[{numbers.setdefault(n, len(numbers) + 1)}]" for n, _ in event.refs))
            out.flush()
        answer = stream.answer()
    notes = _footnotes(answer.citations)
    out.write("\n" + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    return EXIT_OK


def _batch(factory: Factory, batch_id: str) -> BatchInfo:
    info = factory.store().get_batch(batch_id)
    if info is None:
        raise ValidationError(f"no batch {batch_id!r}")
    return info


def _submit(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    parsed = batch.read(
        args.file,
        fmt=args.format,
        default_assistant=args.assistant or factory.settings.assistant,
        callback_allow_hosts=factory.settings.callback_allow_hosts,
    )
    result = batch.submit(
        parsed,
        store=factory.store(),
        idempotency_key=args.idempotency_key,
        skip_invalid=args.skip_invalid,
        source=os.path.basename(args.file),
    )
    for error in result.skipped:
        out.write(f"skipped {error}\n")
    if result.reused and not result.enqueued:
        out.write(f"{result.batch_id}\n(already submitted with this idempotency key: nothing enqueued)\n")
    elif result.reused:
        out.write(f"{result.batch_id}\nfinished an interrupted submission: {result.enqueued} more requests\n")
    else:
        out.write(f"{result.batch_id}\nsubmitted {result.enqueued} requests\n")
    if args.wait:
        return _wait_for(result.batch_id, factory, out, interval=2.0, timeout=None)
    return EXIT_OK


def _status(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    info = _batch(factory, args.batch_id)
    pacing = None
    budget = factory.budget()
    if budget is not None and not info.done:
        unfinished = factory.store().unfinished(info.batch_id, info.counts["queued"] + info.counts["running"])
        assistants = {request.assistant for request in unfinished}
        if not assistants and factory.settings.assistant:
            assistants = {factory.settings.assistant}  # nothing read yet (a submission still starting)
        pacing = Pacing.of(unfinished, budget.peek(assistants), factory.clock())
    view = Progress(info, factory.clock() - info.created_ts, pacing)
    out.write((json.dumps(view.to_dict()) if args.json else view.summary()) + "\n")
    return EXIT_OK


def _wait_for(batch_id: str, factory: Factory, out: TextIO, *, interval: float, timeout: float | None) -> int:
    started = factory.clock()
    tty = out.isatty()
    last: object = None
    while True:
        info = _batch(factory, batch_id)
        line = Progress(info, factory.clock() - info.created_ts).bar()
        # On a terminal the bar is redrawn in place; in a log, a line is written only when counts change.
        key = line if tty else tuple(info.counts.values())
        if key != last:
            out.write(("\r" + line) if tty else (line + "\n"))
            out.flush()
            last = key
        if info.done:
            out.write("\n" if tty else "")
            failures = info.counts["failed"] + info.counts["cancelled"]
            return EXIT_FAILURES if failures else EXIT_OK
        if timeout is not None and factory.clock() - started > timeout:
            out.write(("\n" if tty else "") + f"still running after {timeout:g}s\n")
            return EXIT_ERROR
        factory.sleep(interval)


def _wait(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    return _wait_for(args.batch_id, factory, out, interval=args.interval, timeout=args.timeout)


def _results(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    _batch(factory, args.batch_id)
    items = factory.store().iter_batch(args.batch_id)
    writer = export.write_csv if args.format == "csv" else export.write_jsonl
    if args.output:
        try:
            handle = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ValidationError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        with handle:
            rows = writer(items, handle)
        out.write(f"wrote {rows} results to {args.output}\n")
    else:
        writer(items, out)
    return EXIT_OK


def _retry(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    _batch(factory, args.batch_id)
    count = batch.retry_failed(args.batch_id, store=factory.store())
    out.write(f"re-enqueued {count} failed requests\n")
    return EXIT_OK


def _cancel(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    _batch(factory, args.batch_id)
    count = batch.cancel(args.batch_id, store=factory.store())
    out.write(f"cancelled {count} queued requests (running ones finish)\n")
    return EXIT_OK


def _dlq_show(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    letters = dlq.show(store=factory.store(), queue=factory.queue(), limit=args.limit)
    if args.json:
        for letter in letters:
            out.write(json.dumps(letter.row()) + "\n")
    elif not letters:
        out.write("the DLQ is empty\n")
    else:
        for letter in letters:
            row = letter.row()
            out.write(
                f"{row['request_id'] or row['message_id']}  custom_id={row['custom_id']}  batch={row['batch_id']}"
                f"  receives={row['receives']}  status={row['status']}\n    reason: {row['reason']}\n"
            )
    return EXIT_OK


def _dlq_redrive(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    count = dlq.redrive(store=factory.store(), queue=factory.queue(), limit=args.limit)
    out.write(f"moved {count} messages back to the queue\n")
    return EXIT_OK


def _sweep(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    settings = factory.settings
    swept = sweep.sweep(
        store=factory.store(),
        queue=factory.queue(),
        max_receives=settings.max_receives,
        stranded_after=args.stranded_after or settings.stranded_after_seconds,
        dry_run=args.dry_run,
    )
    if args.json:
        out.write(json.dumps({**swept.to_dict(), "dry_run": args.dry_run, "stranded_ids": swept.stranded}) + "\n")
        return EXIT_OK
    if swept.skipped and not swept.examined:
        out.write(f"nothing examined: {swept.skipped}\n")
        return EXIT_OK
    found = f"{swept.examined} open requests examined, {len(swept.stranded)} stranded"
    if args.dry_run:
        out.write(f"{found} (dry run: nothing written; each would get a new message, or fail if out of attempts)\n")
    else:
        out.write(f"{found}: sent a new message to {len(swept.redispatched)}, failed {len(swept.failed)}\n")
    for request_id in swept.stranded:
        out.write(f"  {request_id}\n")
    if swept.skipped:
        out.write(f"stopped early: {swept.skipped}\n")
    return EXIT_OK


def _callback_secret(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    # Printed on purpose, for the operator to hand to that caller (never logged).
    if not CALLER.match(args.caller):
        raise ValidationError("a caller is webhook:<sender> or key:<16 hex digits of the key's SHA-256>")
    out.write(caller_secret(factory.settings.resolve_callback_secret().get(), args.caller) + "\n")
    return EXIT_OK


def _positive(kind: type[int] | type[float], what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` of the text, more than 0 and finite."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be more than 0 and finite, got {text!r}")
        return value

    return convert


CALLER = re.compile(r"^(webhook:[a-z0-9][a-z0-9_-]{0,62}|key:[0-9a-f]{16})\Z")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for ``--help``)."""
    parser = argparse.ArgumentParser(prog="citeq", description="Cited answers at scale from a Pinecone Assistant.")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question directly (no AWS)")
    ask.add_argument("question")
    ask.add_argument("--assistant", help="assistant name (default: $CITEQ_ASSISTANT)")
    for name, option in OPTIONS.items():
        ask.add_argument(_flag(name), dest=name, help=OPTION_HELP.get(name, f"{name} ({option.cell})"))
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    ask.add_argument("--json", action="store_true", help="print the answer object as JSON")
    ask.set_defaults(run=_ask)

    batches = commands.add_parser("batch", help="submit and follow batches of questions").add_subparsers(
        dest="batch_command", required=True
    )
    submit = batches.add_parser("submit", help="submit a JSONL or CSV file of questions")
    submit.add_argument("file")
    submit.add_argument("--format", choices=("jsonl", "csv"), help="default: from the file's extension")
    submit.add_argument("--assistant", help="for lines that name none (default: $CITEQ_ASSISTANT)")
    submit.add_argument("--idempotency-key", help="submitting the same file again with this key enqueues nothing")
    submit.add_argument("--skip-invalid", action="store_true", help="submit the valid lines, report the rest")
    submit.add_argument("--wait", action="store_true", help="then wait for the batch, with a progress bar")
    submit.set_defaults(run=_submit)
    status = batches.add_parser("status", help="counts, rate and ETA")
    status.add_argument("batch_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    wait = batches.add_parser("wait", help="wait with a progress bar; exit 3 if some requests failed")
    wait.add_argument("batch_id")
    wait.add_argument("--interval", type=float, default=2.0)
    wait.add_argument("--timeout", type=float, help="give up (exit 1) after this many seconds")
    wait.set_defaults(run=_wait)
    results = batches.add_parser("results", help="results in input order")
    results.add_argument("batch_id")
    results.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    results.add_argument("-o", "--output", help="write to this file instead of stdout")
    results.set_defaults(run=_results)
    retry = batches.add_parser("retry", help="re-enqueue the failed requests")
    retry.add_argument("batch_id")
    retry.set_defaults(run=_retry)
    cancel = batches.add_parser("cancel", help="cancel requests not yet started")
    cancel.add_argument("batch_id")
    cancel.set_defaults(run=_cancel)

    dead = commands.add_parser("dlq", help="the dead-letter queue").add_subparsers(dest="dlq_command", required=True)
    show = dead.add_parser("show", help="list DLQ messages with their requests and reasons")
    show.add_argument("--limit", type=_positive(int, "a whole number"), default=100)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_dlq_show)
    redrive = dead.add_parser("redrive", help="move DLQ messages back to the queue (failed requests are retried)")
    redrive.add_argument("--limit", type=_positive(int, "a whole number"), default=1000)
    redrive.set_defaults(run=_dlq_redrive)

    swept = commands.add_parser(
        "sweep", help="send a new message to each request stranded without one (the reconciler does this every 10 min)"
    )
    swept.add_argument("--dry-run", action="store_true", help="only list the stranded requests")
    swept.add_argument(
        "--stranded-after",
        type=_positive(float, "a number of seconds"),
        help="seconds a request must have been still (default: $CITEQ_STRANDED_AFTER_SECONDS or 7200)",
    )
    swept.add_argument("--json", action="store_true", help="one JSON object: the counts and the stranded ids")
    swept.set_defaults(run=_sweep)

    secret = commands.add_parser(
        "callback-secret", help="the secret a caller verifies its callbacks with (from CITEQ_CALLBACK_SECRET[_ARN])"
    )
    secret.add_argument("caller", help="webhook:<sender> (webhook:default when unnamed) or key:<16 hex>")
    secret.set_defaults(run=_callback_secret)
    return parser


def _message(exc: CiteqError) -> tuple[str, int]:
    if isinstance(exc, ConfigurationError):
        return f"configuration: {exc}", EXIT_USAGE
    if isinstance(exc, ValidationError):
        return f"invalid input: {exc}", EXIT_USAGE
    if isinstance(exc, AWSError):
        # Only an identity problem earns the credentials hint; bad input is refused before any write (issue 11).
        hint = " (check AWS credentials and region)" if exc.credentials else " (check CITEQ_TABLE and CITEQ_QUEUE_URL)"
        return f"AWS: {exc}{hint}", EXIT_ERROR
    if isinstance(exc, AuthenticationError):
        return "the assistant rejected the API key (check PINECONE_API_KEY)", EXIT_ERROR
    if isinstance(exc, NotFoundError):
        return f"not found: {exc.message} (check --assistant / CITEQ_ASSISTANT and the region's host)", EXIT_ERROR
    if isinstance(exc, APIStatusError):
        return f"the assistant answered {exc}", EXIT_ERROR
    if isinstance(exc, TransportError):
        return f"could not reach the assistant: {exc}", EXIT_ERROR
    return str(exc), EXIT_ERROR


def main(
    argv: Sequence[str] | None = None,
    *,
    factory: Factory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Factory, TextIO], int] = args.run
    try:
        return run(args, factory or Factory(), out)
    except CiteqError as exc:
        message, code = _message(exc)
        err.write(f"citeq: {message}\n")
        return code
    except KeyboardInterrupt:
        err.write("citeq: interrupted\n")
        return 130
