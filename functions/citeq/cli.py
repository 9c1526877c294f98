"""The ``citeq`` command. Commands are thin: parse arguments, ask a factory for collaborators, print.

Exit codes: 0 ok, 1 error, 2 usage or configuration, 3 finished with failures (batch commands).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from citeq.citations import MarkerFound, TextDelta
from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.errors import (
    APIStatusError,
    AuthenticationError,
    CiteqError,
    ConfigurationError,
    NotFoundError,
    TransportError,
    ValidationError,
)
from citeq.models import Answer, Citation

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILURES = 0, 1, 2, 3


class Factory:
    """Builds the collaborators a command needs from settings (tests pass their own)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """Settings from the environment, read once."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def client(self) -> AssistantClient:
        """An assistant client."""
        self.settings.require("api_key")
        return AssistantClient(self.settings)


def _footnotes(citations: Sequence[Citation]) -> list[str]:
    """``[n] file, pp. …`` lines, one per cited file, pages merged in order of appearance."""
    lines: dict[int, tuple[str, list[int]]] = {}
    numbers: dict[str, int] = {}
    for citation in citations:
        for ref in citation.references:
            name = ref.file.name if ref.file else f"(reference {ref.missing_reference} missing from the list)"
            number = numbers.setdefault(name, len(numbers) + 1)
            pages = lines.setdefault(number, (name, []))[1]
            pages.extend(p for p in ref.pages if p not in pages)
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
            name = ref.file.name if ref.file else f"(reference {ref.missing_reference} missing from the list)"
            marks.append(f"[{numbers.setdefault(name, len(numbers) + 1)}]")
        out.append("".join(dict.fromkeys(marks)))
    out.append(answer.content[cursor:])
    notes = _footnotes(answer.citations)
    return "".join(out) + ("\n\n" + "\n".join(notes) if notes else "")


def _ask(args: argparse.Namespace, factory: Factory, out: TextIO) -> int:
    filter_ = None
    if args.filter:
        try:
            filter_ = json.loads(args.filter)
        except ValueError as exc:
            raise ValidationError(f"--filter is not valid JSON: {exc}") from None
        if not isinstance(filter_, dict):
            raise ValidationError("--filter must be a JSON object")
    client = factory.client()
    kwargs: dict[str, Any] = {"assistant": args.assistant, "model": args.model, "filter": filter_}
    if args.no_stream or args.json:
        answer = client.chat(args.question, **kwargs)
        out.write(json.dumps(answer.to_dict(), indent=2) + "\n" if args.json else format_answer(answer) + "\n")
        return EXIT_OK
    with client.stream(args.question, **kwargs) as stream:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for ``--help``)."""
    parser = argparse.ArgumentParser(prog="citeq", description="Cited answers at scale from a Pinecone Assistant.")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer one question directly (no AWS)")
    ask.add_argument("question")
    ask.add_argument("--assistant", help="assistant name (default: $CITEQ_ASSISTANT)")
    ask.add_argument("--model", help="model, e.g. gpt-4o (default: the service's)")
    ask.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"kind": "manual"}\'')
    ask.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    ask.add_argument("--json", action="store_true", help="print the answer object as JSON")
    ask.set_defaults(run=_ask)
    return parser


def _message(exc: CiteqError) -> tuple[str, int]:
    if isinstance(exc, ConfigurationError):
        return f"configuration: {exc}", EXIT_USAGE
    if isinstance(exc, ValidationError):
        return f"invalid input: {exc}", EXIT_USAGE
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
