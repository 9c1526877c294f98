"""A deterministic synthetic corpus for benchmarks: realistic sentence shapes, a large vocabulary."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = [
    "The billing service",
    "Each workspace",
    "An administrator",
    "The export job",
    "A webhook receiver",
    "The query engine",
    "Every API key",
    "The audit log",
    "A scheduled report",
    "The retention policy",
]
VERBS = [
    "stores",
    "rejects",
    "retries",
    "encrypts",
    "summarises",
    "forwards",
    "expires",
    "validates",
    "caches",
    "indexes",
]


def write_corpus(folder: Path, files: int, bytes_per_file: int, seed: int = 1) -> int:
    """Write ``files`` text files of about ``bytes_per_file`` bytes; returns the total size."""
    rng = random.Random(seed)
    vocabulary = [f"term{n}" for n in range(20_000)]
    total = 0
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        parts: list[str] = []
        size = 0
        while size < bytes_per_file:
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(6, 14)))
            sentence = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {words} within {rng.randint(1, 90)} days."
            parts.append(sentence)
            size += len(sentence) + 1
        text = " ".join(parts)
        (folder / f"doc-{index:05d}.txt").write_text(text)
        total += len(text)
    return total
