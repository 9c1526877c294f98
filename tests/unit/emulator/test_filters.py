from __future__ import annotations

from typing import Any

import pytest

from infra.emulator.exceptions import InvalidArgument
from infra.emulator.filters import matches, validate

META = {"genre": "report", "year": 2024, "tags": ["finance", "q3"], "draft": False}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"genre": "report"}, True),
        ({"genre": {"$eq": "memo"}}, False),
        ({"genre": {"$ne": "memo"}}, True),
        ({"year": {"$gt": 2023}}, True),
        ({"year": {"$gte": 2024, "$lt": 2025}}, True),
        ({"year": {"$lte": 2023}}, False),
        ({"genre": {"$in": ["memo", "report"]}}, True),
        ({"genre": {"$nin": ["memo", "report"]}}, False),
        ({"tags": "q3"}, True),
        ({"tags": {"$nin": ["q4"]}}, True),
        ({"missing": {"$exists": False}}, True),
        ({"year": {"$exists": True}}, True),
        ({"$or": [{"genre": "memo"}, {"year": 2024}]}, True),
        ({"$and": [{"genre": "report"}, {"draft": True}]}, False),
        ({"genre": "report", "year": 1999}, False),
        ({"missing": "x"}, False),
        ({"genre": {"$gt": 1}}, False),
        ({"genre": {"$not": {"$eq": "memo"}}}, True),
        ({"genre": {"$not": {"$eq": "report"}}}, False),
        ({"year": {"$not": {"$gte": 2000, "$lt": 2020}}}, True),
        ({"tags": {"$not": {"$in": ["q3"]}}}, False),
        ({"missing": {"$not": {"$exists": True}}}, True),
    ],
)
def test_matches_operator_table(expr: dict[str, Any], expected: bool) -> None:
    assert matches(expr, META) is expected


@pytest.mark.parametrize(
    "expr",
    [
        {"genre": {"$regex": "r"}},
        {"$nor": []},
        {"year": {"$gt": "x"}},
        {"genre": {"$in": "report"}},
        {"$or": {"genre": "x"}},
        {"x": {"$exists": "yes"}},
        {"genre": ["report", "memo"]},
        {"genre": {"$eq": ["report", "memo"]}},
        {"genre": {"$ne": ["memo"]}},
        {"genre": {"$eq": {"a": 1}}},
        {"genre": {"$in": [["report"]]}},
        {"genre": {}},
        {"genre": {"$not": "report"}},
        {"genre": {"$not": {}}},
        {"genre": {"$not": {"genre": "x"}}},
        {"$not": {"genre": "x"}},
    ],
)
def test_validate_rejects_what_the_service_rejects(expr: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        validate(expr)
