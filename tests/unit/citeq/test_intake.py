"""Single-request validation at intake (issue 11): a callback host that resolves inside is a 400 before any write."""

from __future__ import annotations

from typing import Any

import pytest

from citeq.errors import ValidationError
from citeq.intake import validate


def _resolves_to(*addresses: str) -> Any:
    return lambda host, port: [(2, 1, 6, "", (address, port)) for address in addresses]


def _fails(host: str, port: int) -> Any:
    raise OSError("Name or service not known")


@pytest.mark.parametrize("address", ["10.0.0.5", "100.64.3.2", "169.254.169.254", "127.0.0.1", "fd00::1"])
def test_a_callback_name_resolving_to_an_internal_address_is_refused(address: str) -> None:
    body = {"question": "q", "callback_url": "https://hooks.internal.example.com/cb"}
    with pytest.raises(ValidationError, match="non-public address"):
        validate(body, "main", resolve=_resolves_to("93.184.216.34", address))


def test_a_public_name_or_one_that_does_not_resolve_yet_is_accepted() -> None:
    body = {"question": "q", "callback_url": "https://hooks.example.com/cb"}
    assert validate(body, "main", resolve=_resolves_to("93.184.216.34")).callback_url == body["callback_url"]
    # DNS may answer later: the delivery checks again (and keeps retrying on the schedule).
    assert validate(body, "main", resolve=_fails).callback_url == body["callback_url"]


def test_allow_listed_hosts_are_not_resolved() -> None:
    body = {"question": "q", "callback_url": "http://127.0.0.1:4000/cb"}
    assert validate(body, "main", allow_hosts=("127.0.0.1",), resolve=_fails).callback_url == body["callback_url"]


@pytest.mark.parametrize("body", ["text", [1], None, {"messages": "abc"}, {"messages": [1]}])
def test_bodies_of_the_wrong_shape_are_validation_errors(body: Any) -> None:
    with pytest.raises(ValidationError):
        validate(body, "main")
