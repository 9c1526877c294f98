"""``make demo``: citeq's main job on the embedded default (the emulator + moto), nothing else needed.

1. the emulator on the sample documents: three questions through the openai SDK;
2. the batch pipeline: samples/questions.jsonl -> ``citeq batch submit --wait`` (progress bar) -> results
   with citations printed, and exported to out/results.jsonl and out/results.csv;
3. one answer streamed live through the stream function, and one signed webhook whose signed callback
   lands on a local receiver.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from openai import OpenAI

from citeq.callbacks import caller_secret
from citeq.cli import Factory, format_answer
from citeq.cli import main as citeq
from citeq.config import Settings
from citeq.models import Answer
from infra.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent
# Short enough to keep the demo quick, long enough that a chat before the files are ready would fail.
DEMO_PROCESSING_SECONDS = 3.0
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
        waited = f", put off {item.deferrals}x for the token budget" if item.deferrals else ""
        print(f"[{item.custom_id}] {item.status}, {item.attempts} attempt(s){waited}, {item.latency_ms} ms")
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


def streaming_and_webhook(stack: LocalStack) -> None:
    """Section 3: one answer streamed live through the stream app; one signed webhook with a callback."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests
    from standardwebhooks import Webhook

    from citeq.webhooks import sign

    assert stack.stream is not None and stack.webhook is not None
    _heading("streamed live through the stream function (openai SDK -> stream app -> assistant)")
    client = OpenAI(api_key=stack.api_key, base_url=f"{stack.stream.url}/assistant/chat/{stack.assistant}")
    question = "How long are failed webhook deliveries retried?"
    print(f"Q: {question}\nA: ", end="", flush=True)
    final: dict[str, object] = {}
    in_references = False  # the References list is streamed too; the final chunk has it as structure
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}], stream=True
    ):
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content and not in_references:
            in_references = "References:" in content
            print(content.split("\n\nReferences:")[0], end="", flush=True)
        final = chunk.model_extra or final
    citeq_answer = final.get("citeq") if isinstance(final, dict) else None
    if isinstance(citeq_answer, dict):
        print(f"\n   (final chunk carries the answer object: {len(citeq_answer['citations'])} structured citations)")

    _heading("a signed webhook in, a signed callback out")
    received: list[dict[str, object]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            # Each sender's callbacks are signed with its own secret, derived from the callback secret.
            secret = caller_secret(stack.callback_secret, "webhook:default")
            received.append(Webhook(secret).verify(body.decode(), dict(self.headers.items())))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = f"http://127.0.0.1:{server.server_address[1]}/citeq-callback"
    body = json.dumps(
        {
            "question": "How many days of paid time off do employees accrue?",
            "callback_url": callback,
            "custom_id": "ticket-9120",
            "metadata": {"ticket": "9120"},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        **sign(stack.webhook_secrets[0], "msg_demo_1", int(time.time()), body),
    }
    accepted = requests.post(f"{stack.webhook.url}/v1/webhooks", data=body, headers=headers, timeout=10)
    print(f"POST /v1/webhooks -> {accepted.status_code} {accepted.json()}")
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    server.shutdown()
    if received:
        got = received[0]
        answer = got.get("answer") if isinstance(got.get("answer"), dict) else {}
        print(
            f"callback verified (Standard Webhooks): {got['status']} for {got['custom_id']} "
            f"{got['metadata']}: {str(answer.get('message', {}).get('content', ''))[:100]}..."
        )  # type: ignore[union-attr]
    else:
        print("no callback arrived within 30 s")


def main() -> int:
    """Run the demo; returns the exit code."""
    # Files take time to process, as on the service: the stack waits until they are Available.
    started = time.monotonic()
    with LocalStack(processing_seconds=DEMO_PROCESSING_SECONDS) as stack:
        print(f"(the assistant's files were Available {time.monotonic() - started:.1f} s after the start)")
        print(f"local stack: moto on {stack.endpoint}, emulator on {stack.emulator.url if stack.emulator else '?'}")
        limit = stack.plan.tokens_per_minute
        print(
            f"emulated assistant plan: {stack.plan.plan}, "
            + (f"{limit:,} chat input tokens a minute" if limit else "no token limit")
        )
        openai_questions(stack)
        batch_pipeline(Factory(Settings.from_env()), ROOT / "out")
        streaming_and_webhook(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
