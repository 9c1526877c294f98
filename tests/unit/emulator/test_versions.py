from __future__ import annotations

import pytest

from infra.emulator import versions
from infra.emulator.exceptions import InvalidArgument


@pytest.mark.parametrize(
    ("header", "served", "operations"),
    [
        (None, "2025-01", False),
        ("2025-10", "2025-10", False),
        (" 2026-04 ", "2026-04", True),
        ("2026-01.alpha", "2026-01.alpha", True),
        ("2026-07", "2026-07", True),
    ],
)
def test_resolve_known_versions(header: str | None, served: str, operations: bool) -> None:
    assert versions.resolve(header) == served
    assert versions.has_operations(served) is operations


@pytest.mark.parametrize("header", ["2099-01", "2026-7", "", "foo"])
def test_resolve_refuses_unknown_versions(header: str) -> None:
    with pytest.raises(InvalidArgument, match="Unsupported API version"):
        versions.resolve(header)


@pytest.mark.parametrize(
    ("model", "version", "route", "ok"),
    [
        ("gpt-4o", "2025-01", "chat_completions", True),
        ("gpt-4.1", "2025-01", "chat_completions", False),
        ("claude-3-7-sonnet", "2025-04", "chat", True),
        ("claude-3-7-sonnet", "2026-04", "chat", False),
        ("gpt-5", "2026-07", "chat", True),
        ("gpt-5", "2026-07", "chat_completions", False),
        ("gpt-4o-mini", "2026-07", "chat", False),
    ],
)
def test_check_model_per_version_and_route(model: str, version: str, route: str, ok: bool) -> None:
    if ok:
        versions.check_model(model, version, route)
    else:
        with pytest.raises(InvalidArgument, match=f"Invalid model `{model}`. Expected one of: gpt-4o"):
            versions.check_model(model, version, route)
