from __future__ import annotations

import time
from typing import Any

import pytest

from citeq.callbacks import SCHEDULE, UnsafeURL, check_url


def _resolves_to(address: str) -> Any:
    return lambda host, port: [(2, 1, 6, "", (address, port))]


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"]
)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeURL, match="non-public"):
        check_url("https://hooks.example.com/x", (), _resolves_to(address))


def test_public_address_and_allow_list_pass() -> None:
    check_url("https://hooks.example.com/x", (), _resolves_to("93.184.216.34"))
    check_url("http://127.0.0.1:8080/cb", ("127.0.0.1",), _resolves_to("127.0.0.1"))


@pytest.mark.parametrize("url", ["ftp://example.com/x", "https:///nohost", "file:///etc/passwd"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, (), _resolves_to("93.184.216.34"))


def test_schedule_reaches_about_a_day() -> None:
    assert SCHEDULE[0] < 60 and 60 <= SCHEDULE[2] < 3600 and SCHEDULE[-1] >= 3600
    assert 12 * 3600 <= sum(SCHEDULE) <= 30 * 3600


def test_a_signing_secret_that_cannot_be_read_is_a_failed_attempt_retried_later(aws: dict[str, str]) -> None:
    from citeq.callbacks import Deliverer
    from citeq.errors import ConfigurationError
    from citeq.store import NewRequest, Store

    store = Store(aws["ResultsTable"])
    store.put_request(
        NewRequest("r-cb", "a", [{"role": "user", "content": "q"}], callback={"url": "https://hooks.example.com/cb"})
    )
    running = store.claim(store.get("r-cb"), lease_until=time.time() + 60)  # type: ignore[arg-type]
    assert running is not None and store.succeed(running, {"message": {"content": "a"}, "citations": []}, 5)

    def unavailable() -> str:
        raise ConfigurationError("could not read secret 'arn:...' (CITEQ_CALLBACK_SECRET_ARN)")

    class NoNetwork:
        def post(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing may be sent unsigned")

    deliverer = Deliverer(store, unavailable, session=NoNetwork(), resolve=_resolves_to("93.184.216.34"))  # type: ignore[arg-type]
    outcome = deliverer.deliver("r-cb", 1)
    assert (outcome.delivered, outcome.error, outcome.retry_in) == (
        False,
        "the signing secret is not available",
        float(SCHEDULE[0]),
    )
    item = store.get("r-cb")
    assert item is not None and item.deliveries[-1]["error"] == "the signing secret is not available"
