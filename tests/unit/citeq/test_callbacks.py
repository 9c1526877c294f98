from __future__ import annotations

import base64
import random
import socket
import time
from typing import Any

import pytest
from standardwebhooks import Webhook

from citeq.callbacks import (
    SCHEDULE,
    UnsafeURL,
    caller_secret,
    check_url,
    check_url_at_intake,
    parse_url,
)

SECRET = "whsec_" + base64.b64encode(random.Random(7).randbytes(32)).decode()


def _resolves_to(*addresses: str) -> Any:
    return lambda host, port: [(2, 1, 6, "", (address, port)) for address in addresses]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",  # shared address space (carrier-grade NAT), not "private" to Python
        "100.127.255.254",
        "192.0.0.8",
        "198.18.0.1",
        "192.0.2.1",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b:1::a00:1",
        "2001:db8::1",
        "0.0.0.0",
        "::",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeURL, match="non-public"):
        check_url("https://hooks.example.com/x", (), _resolves_to(address))


def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="non-public"):
        check_url("https://hooks.example.com/x", (), _resolves_to("93.184.216.34", "10.0.0.1"))


def test_public_address_and_allow_list_pass_and_the_first_address_is_the_one_connected_to() -> None:
    assert check_url("https://hooks.example.com/x", (), _resolves_to("93.184.216.34", "93.184.216.35")) == (
        "93.184.216.34"
    )
    assert check_url("http://127.0.0.1:8080/cb", ("127.0.0.1",), _resolves_to("127.0.0.1")) == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "https:///nohost",
        "file:///etc/passwd",
        "gopher://example.com/",
        "https://example.com\\@127.0.0.1/",  # the authority backslash issue 11 found
        "https://127.0.0.1\\.example.com/",
        "https://user:pw@example.com/",
        "https://example.com@127.0.0.1/",
        "https://exa mple.com/",
        "https://example.com/\t",
        "https://%31%32%37.0.0.1/",
        "https://127.1/",
        "https://0x7f.0.0.1/",
        "https://2130706433/",
        "https://017700000001/",
        "https://[::1/",
        "https://[zz::1]/",
        "https://example.com:/",
        "https://example.com:0/",
        "https://example.com:99999/",
        "https://example.com:-1/",
        "https://exämple.com/",
        "https://example.com/\u2028",
        "",
        "https://" + "a" * 3000 + ".com/",
    ],
)
def test_malformed_urls_are_refused_by_the_one_parser(url: str) -> None:
    with pytest.raises(UnsafeURL):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://127.0.0.1/cb", "non-public address"),
        ("https://[::1]/cb", "non-public address"),
        ("http://169.254.169.254/latest/meta-data", "non-public address"),
        ("https://100.64.1.1/", "non-public address"),
        ("https://localhost/cb", "non-public name"),
        ("https://api.localhost/cb", "non-public name"),
        ("https://intranet/cb", "non-public name"),
        ("https://hooks.example.com:22/", "port must be one of"),
        ("https://hooks.example.com:6379/", "port must be one of"),
    ],
)
def test_intake_refuses_internal_literals_names_and_ports_without_dns(url: str, why: str) -> None:
    with pytest.raises(UnsafeURL, match=why):
        check_url_at_intake(url)


def test_intake_accepts_public_urls_and_allow_listed_hosts_on_any_port() -> None:
    target = check_url_at_intake("https://Hooks.Example.com:8443/a/b?x=1&y=%20")
    assert (target.host, target.port, target.path, target.host_header) == (
        "hooks.example.com",
        8443,
        "/a/b?x=1&y=%20",
        "hooks.example.com:8443",
    )
    assert check_url_at_intake("http://127.0.0.1:41234/cb", ("127.0.0.1",)).port == 41234
    assert check_url_at_intake("https://[2606:4700::1111]/").host_header == "[2606:4700::1111]"


def test_a_host_that_does_not_resolve_is_a_clear_error() -> None:
    def fails(host: str, port: int) -> Any:
        raise OSError("no such host")

    with pytest.raises(UnsafeURL, match="does not resolve"):
        check_url("https://hooks.example.com/", (), fails)


def test_caller_secrets_differ_per_caller_and_verify_with_the_standardwebhooks_library() -> None:
    acme, other = caller_secret(SECRET, "webhook:acme"), caller_secret(SECRET, "key:0123456789abcdef")
    assert len({SECRET, acme, other}) == 3 and caller_secret(SECRET, None) == SECRET
    assert caller_secret(SECRET, "webhook:acme") == acme  # stable: the caller can be told it once
    import time

    from standardwebhooks.webhooks import WebhookVerificationError

    from citeq.webhooks import sign

    body = b'{"request_id":"r_1"}'
    headers = sign(acme, "r_1.0", int(time.time()), body)
    assert Webhook(acme).verify(body, headers) == {"request_id": "r_1"}

    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_schedule_reaches_about_a_day() -> None:
    assert SCHEDULE[0] < 60 and 60 <= SCHEDULE[2] < 3600 and SCHEDULE[-1] >= 3600
    assert 12 * 3600 <= sum(SCHEDULE) <= 30 * 3600


@pytest.mark.parametrize("secret", ["unavailable", "malformed"])
def test_a_signing_secret_that_is_unusable_is_a_failed_attempt_retried_later(aws: dict[str, str], secret: str) -> None:
    from citeq.callbacks import CallbackDeliverer
    from citeq.errors import ConfigurationError
    from citeq.models import ChatRequest, Request
    from citeq.store import Store

    store = Store(aws["ResultsTable"])
    store.put_request(
        Request("r-cb", ChatRequest.ask("q", "a"), callback_url="https://hooks.example.com/cb")
    )
    running = store.claim(store.get("r-cb"), lease_until=time.time() + 60)  # type: ignore[arg-type]
    assert running is not None and store.succeed(running, {"message": {"content": "a"}, "citations": []}, 5)

    def unavailable() -> str:
        raise ConfigurationError("could not read secret 'arn:...' (CITEQ_CALLBACK_SECRET_ARN)")

    def connect_nowhere(host: str, port: int) -> Any:
        # A documentation address: if anything tried to connect, the test would fail on it, not pass silently.
        return [(2, 1, 6, "", ("93.184.216.34", port))]

    source: Any = unavailable if secret == "unavailable" else (lambda: "whsec_c2hvcnQ=")
    deliverer = CallbackDeliverer(store, source, resolve=connect_nowhere, deadline_seconds=0.0)
    outcome = deliverer.deliver("r-cb", 1)
    assert (outcome.delivered, outcome.error, outcome.retry_in) == (
        False,
        "the signing secret is not available",
        float(SCHEDULE[0]),
    )
    assert outcome.failure == "secret_unavailable"
    item = store.get("r-cb")
    assert item is not None and item.deliveries[-1]["error"] == "the signing secret is not available"
    assert item.deliveries[-1]["failure"] == "secret_unavailable"


def _finished_with_callback(aws: dict[str, str], request_id: str, url: str) -> Any:
    from citeq.models import ChatRequest, Request
    from citeq.store import Store

    store = Store(aws["ResultsTable"])
    store.put_request(Request(request_id, ChatRequest.ask("q", "a"), callback_url=url))
    running = store.claim(store.get(request_id), lease_until=time.time() + 60)  # type: ignore[arg-type]
    assert running is not None and store.succeed(running, {"message": {"content": "a"}, "citations": []}, 5)
    return store


def test_a_host_that_does_not_resolve_is_unresolved_and_retried_without_connecting(aws: dict[str, str]) -> None:
    from citeq.callbacks import CallbackDeliverer

    store = _finished_with_callback(aws, "r-dns", "https://hooks.example.com/cb")

    def no_answer(host: str, port: int) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    outcome = CallbackDeliverer(store, SECRET, resolve=no_answer).deliver("r-dns", 1)
    assert (outcome.delivered, outcome.status, outcome.failure) == (False, None, "unresolved")
    assert outcome.retry_in == float(SCHEDULE[0])
    assert store.get("r-dns").deliveries[-1]["failure"] == "unresolved"


def test_a_request_without_a_result_yet_has_nothing_to_deliver_and_records_nothing(aws: dict[str, str]) -> None:
    from citeq.callbacks import CallbackDeliverer
    from citeq.models import ChatRequest, Request
    from citeq.store import Store

    store = Store(aws["ResultsTable"])
    store.put_request(Request("r-q", ChatRequest.ask("q", "a"), callback_url="https://h.example/"))
    for request_id in ("r-q", "r-unknown"):
        outcome = CallbackDeliverer(store, SECRET).deliver(request_id, 1)
        assert (outcome.delivered, outcome.failure, outcome.retry_in) == (False, "nothing_to_deliver", None)
    assert store.get("r-q").deliveries == []
