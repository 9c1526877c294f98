"""Benchmarks print figures (and ratios to a baseline measured in the same run); they assert no timings."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every item of the session, so mark only the ones under tests/bench.
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.bench)
