"""Standard Webhooks signing and verification, checked against the independent `standardwebhooks` package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from citeq.errors import WebhookError
from citeq.webhooks import sign, verify

SECRET = "whsec_" + base64.b64encode(b"a-thirty-two-byte-secret-for-tests").decode()
ROTATED = "whsec_" + base64.b64encode(b"the-next-secret-after-rotation!!").decode()
NOW = 1_764_100_000
BODY = b'{"question": "hi"}'


def test_our_signature_equals_the_reference_library_and_it_verifies_ours() -> None:
    headers = sign(SECRET, "msg_1", NOW, BODY)
    reference = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    assert headers["webhook-signature"] == reference
    fresh = sign(SECRET, "msg_1", int(datetime.now(UTC).timestamp()), BODY)
    assert Webhook(SECRET).verify(BODY.decode(), fresh) == {"question": "hi"}


def test_reference_signature_verifies_here() -> None:
    signature = Webhook(SECRET).sign("msg_2", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_2"


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(0, True), (-299, True), (299, True), (-301, False), (301, False)],
)
def test_timestamp_window_is_checked_both_ways(offset: int, ok: bool) -> None:
    headers = sign(SECRET, "msg_3", NOW + offset, BODY)
    if ok:
        assert verify([SECRET], headers, BODY, now=NOW) == "msg_3"
    else:
        with pytest.raises(WebhookError):
            verify([SECRET], headers, BODY, now=NOW)


def test_rotation_either_secret_and_several_signatures() -> None:
    headers = sign(ROTATED, "msg_4", NOW, BODY)
    assert verify([SECRET, ROTATED], headers, BODY, now=NOW) == "msg_4"
    with pytest.raises(WebhookError):
        verify([SECRET], headers, BODY, now=NOW)
    stale = sign(SECRET, "msg_4", NOW, b"other")["webhook-signature"]
    headers["webhook-signature"] = f"{stale} {headers['webhook-signature']}"
    assert verify([ROTATED], headers, BODY, now=NOW) == "msg_4"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: {**h, "webhook-signature": "v1,AAAA"}, "no webhook-signature matches"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-id"}, "missing"),
        (lambda h: {**h, "webhook-timestamp": "soon"}, "integer"),
        (lambda h: {**h, "webhook-id": "msg_other"}, "no webhook-signature matches"),
        (lambda h: {**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, "no webhook-signature"),
    ],
)
def test_bad_headers_are_rejected(mutate: object, reason: str) -> None:
    headers = sign(SECRET, "msg_5", NOW, BODY)
    with pytest.raises(WebhookError, match=reason):
        verify([SECRET], mutate(headers), BODY, now=NOW)  # type: ignore[operator]


def test_tampered_body_is_rejected_and_headers_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in sign(SECRET, "msg_6", NOW, BODY).items()}
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_6"
    with pytest.raises(WebhookError):
        verify([SECRET], headers, BODY + b" ", now=NOW)


def test_malformed_secret_is_a_clear_error() -> None:
    with pytest.raises(WebhookError, match="base64"):
        sign("whsec_***not base64***", "m", NOW, BODY)
