"""citeq.text: JSON that Python's parser takes but is not JSON (NaN, Infinity, 1e400), integers past Python's
conversion bound, and repeated keys are refused as citeq's ValidationError, never a bare ValueError or a value
the assistant's client cannot send."""

from __future__ import annotations

import math

import pytest

from citeq.errors import ValidationError
from citeq.text import MAX_INT_DIGITS, check_text, loads


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"x": NaN}', "NaN is not a JSON number"),
        ('{"x": Infinity}', "Infinity is not a JSON number"),
        ('{"x": -Infinity}', "-Infinity is not a JSON number"),
        ('{"x": 1e400}', "1e400 is too large a number"),
        ('{"x": -1e400}', "-1e400 is too large a number"),
        ('{"x": ' + "7" * (MAX_INT_DIGITS + 1) + "}", f"a number has more than {MAX_INT_DIGITS} digits"),
        ('{"x": -' + "7" * (MAX_INT_DIGITS + 1) + "}", f"a number has more than {MAX_INT_DIGITS} digits"),
        ('{"question": "a", "question": "b"}', "the key 'question' appears more than once in one object"),
        ('{"m": {"k": 1, "k": 1}}', "the key 'k' appears more than once in one object"),
    ],
)
def test_loads_not_json_or_ambiguous_raises_validation_error_naming_it(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        loads(text, what="the line")
    assert raised.value.reason == f"the line: {reason}"


def test_loads_ordinary_numbers_and_the_longest_integer_are_read() -> None:
    longest = int("7" * MAX_INT_DIGITS)
    assert loads('{"a": 1.5e300, "b": -0.0, "c": ' + str(longest) + ', "d": [1, 1]}') == {
        "a": 1.5e300,
        "b": -0.0,
        "c": longest,
        "d": [1, 1],
    }


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_check_text_a_non_finite_number_raises_naming_its_field(number: float) -> None:
    with pytest.raises(ValidationError, match=r"^metadata\.a\.\[1\] is .* which is not a JSON number$"):
        check_text({"a": [0.5, number]}, field="metadata")
