"""Benchmarks print figures (and ratios to a baseline measured in the same run); they assert no timings.
Each also records its row in one table, written to ``out/bench.md`` at the end of the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.figures import FIGURES, Figures

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every item of the session, so mark only the ones under tests/bench.
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.bench)


@pytest.fixture
def figures() -> Figures:
    """Where a benchmark records the figures it prints."""
    return FIGURES


def pytest_sessionfinish(session: pytest.Session) -> None:
    if FIGURES.rows:
        path = FIGURES.write()
        print(f"\n[bench] {len(FIGURES.rows)} figures written to {path}\n" + FIGURES.markdown())
