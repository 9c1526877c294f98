"""``make demo``: citeq's main job on the embedded default (the emulator + moto), nothing else needed.

1. the emulator on the sample documents: three questions through the openai SDK;
2. the batch pipeline: samples/questions.jsonl -> ``citeq batch submit --wait`` (progress bar) -> results
   with citations printed, and exported to out/results.jsonl and out/results.csv.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from openai import OpenAI

from citeq.cli import Factory, format_answer
from citeq.cli import main as citeq
from citeq.config import Settings
from citeq.models import Answer
from infra.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "What does a request over the rate limit receive?",
    "How many days of paid time off do employees accrue?",
    "How quickly must customers be told about a data breach?",
]


def _heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def openai_questions(stack: LocalStack) -> None:
    """Section 1: the emulator answers through the openai SDK."""
    assert stack.emulator is not None
    _heading("the assistant emulator, through the openai SDK")
    client = OpenAI(api_key=stack.emulator.api_key, base_url=f"{stack.emulator.url}/assistant/chat/{stack.assistant}")
    for question in QUESTIONS:
        completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": question}])
        content = completion.choices[0].message.content or ""
        body, _, references = content.partition("\n\nReferences:\n")
        print(f"Q: {question}\nA: {body}")
        for line in references.splitlines():
            found = re.match(r"(\d+)\. \[(.+?)\]\((\S+)\)", line)
            if found:
                print(f"   {found[1]}. {found[2]}  (signed URL, expires in an hour)")
        print()


def batch_pipeline(factory: Factory, out_dir: Path) -> None:
    """Section 2: submit -> wait -> results, on moto and the emulator."""
    _heading("the batch pipeline: SQS -> worker -> DynamoDB (moto + emulator)")
    questions = ROOT / "samples" / "questions.jsonl"
    print(f"$ citeq batch submit {questions.relative_to(ROOT)} --wait")
    from io import StringIO

    submitted = StringIO()
    citeq(["batch", "submit", str(questions)], factory=factory, out=submitted)
    batch_id = submitted.getvalue().split()[0]
    print(submitted.getvalue(), end="")
    code = citeq(["batch", "wait", batch_id, "--interval", "0.5"], factory=factory)
    print(f"(wait exited {code}: 0 = all answered, 3 = finished with failures)")
    _heading("results, in input order")
    for item in factory.store().iter_batch(batch_id):
        print(f"[{item.custom_id}] {item.status}, {item.attempts} attempt(s), {item.latency_ms} ms")
        print(f"  Q: {item.question}")
        if item.answer:
            print("  A: " + format_answer(Answer.from_dict(item.answer)).replace("\n", "\n     "))
        if item.error:
            print(f"  error: {item.error['type']} ({item.error.get('http_status')}): {item.error['message']}")
        print()
    out_dir.mkdir(exist_ok=True)
    for fmt in ("jsonl", "csv"):
        citeq(["batch", "results", batch_id, "--format", fmt, "-o", str(out_dir / f"results.{fmt}")], factory=factory)
    citeq(["batch", "status", batch_id], factory=factory)


def main() -> int:
    """Run the demo; returns the exit code."""
    with LocalStack() as stack:
        print(f"local stack: moto on {stack.endpoint}, emulator on {stack.emulator.url if stack.emulator else '?'}")
        openai_questions(stack)
        batch_pipeline(Factory(Settings.from_env()), ROOT / "out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
