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
# Standard Webhooks: "secrets should be between 24 bytes (192 bits) and 64 bytes (512 bits)", random.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret; WebhookError (never echoing it) unless base64 of 24-64 bytes."""
    raw = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookError("a webhook secret must be 'whsec_' followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise WebhookError(
            f"a webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes; this one has {len(key)}"
        )
    if len(set(key)) < 8:
        # All-zero or repeated-byte keys decode fine but are not random (a placeholder left in place).
        raise WebhookError("a webhook secret must be random bytes, not a repeated pattern")
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
    return verify_sender([("", secret) for secret in secrets], headers, body, now=now, tolerance=tolerance)[1]


def verify_sender(
    senders: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> tuple[str, str]:
    """Check a delivery against ``(sender, secret)`` pairs; returns ``(sender, webhook id)`` of the first whose
    secret signed it, or raises WebhookError saying why not."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not stamp or not signatures:
        raise WebhookError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not (msg_id + stamp + signatures).isascii():
        raise WebhookError("webhook headers must be ASCII")
    if not stamp.strip().isdigit() or len(stamp.strip()) > 12:
        raise WebhookError("webhook-timestamp must be an integer (seconds since the epoch)")
    timestamp = int(stamp)
    if timestamp < now - tolerance:
        raise WebhookError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise WebhookError("webhook-timestamp is in the future")
    offered = [part.split(",", 1)[1] for part in signatures.split() if part.startswith("v1,")]
    for sender, secret in senders:
        # A malformed configured secret raises WebhookError here too; config checks secrets at load so that the
        # operator hears of it (503) instead of the sender being told its signature is wrong.
        expected = signature(secret, msg_id, timestamp, body).split(",", 1)[1]
        # Compare against every offered signature without stopping early: constant time per candidate.
        if any([hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered]):
            return sender, msg_id
    raise WebhookError("no webhook-signature matches")
