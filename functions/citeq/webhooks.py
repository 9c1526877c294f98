"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign and verify. Pure.

Signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is base64(HMAC-SHA256) with the
secret's bytes (``whsec_`` + base64), sent as ``webhook-signature: v1,<sig>`` — several space-separated
signatures are allowed (key rotation). Timestamps more than ``tolerance`` seconds away, past or future, fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from citeq.errors import WebhookError

TOLERANCE_SECONDS = 300
PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret."""
    raw = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError("a webhook secret must be 'whsec_' followed by base64") from None
    if not key:
        raise WebhookError("a webhook secret must not be empty")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def verify(
    secrets: Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check a delivery against any of ``secrets``; returns the webhook id, or raises WebhookError."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not stamp or not signatures:
        raise WebhookError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookError("webhook-timestamp must be an integer (seconds since the epoch)") from None
    if timestamp < now - tolerance:
        raise WebhookError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise WebhookError("webhook-timestamp is in the future")
    offered = [part.split(",", 1)[1] for part in signatures.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = signature(secret, msg_id, timestamp, body).split(",", 1)[1]
        # Compare against every offered signature without stopping early: constant time per candidate.
        if any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered):
            return msg_id
    raise WebhookError("no webhook-signature matches")
