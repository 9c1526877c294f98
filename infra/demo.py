"""``make demo``: the emulator on the sample documents, three questions through the openai SDK."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from openai import OpenAI

from infra.emulator import Backend, EmulatorServer

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "docs"
ASSISTANT = "citeq-demo"
QUESTIONS = [
    "What does a request over the rate limit receive?",
    "How many days of paid time off do employees accrue?",
    "How quickly must customers be told about a data breach?",
]


def main() -> int:
    """Run the demo; returns the exit code."""
    backend = Backend()
    with EmulatorServer(backend) as server:
        files = backend.load_directory(ASSISTANT, SAMPLES)
        print(f"emulator on {server.url}: assistant {ASSISTANT!r} with {len(files)} files from {SAMPLES}\n")
        client = OpenAI(api_key=server.api_key, base_url=f"{server.url}/assistant/chat/{ASSISTANT}")
        for question in QUESTIONS:
            completion = client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": question}]
            )
            content = completion.choices[0].message.content or ""
            body, _, references = content.partition("\n\nReferences:\n")
            print(f"Q: {question}\nA: {body}")
            for line in references.splitlines():
                # Show the file name and the signed URL's expiry rather than the whole URL.
                found = re.match(r"(\d+)\. \[(.+?)\]\((\S+)\)", line)
                if found:
                    print(f"   [{found[1]}] {found[2]}  (signed URL, X-Goog-Expires=3600)")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
