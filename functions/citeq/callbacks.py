"""Callbacks: when a request with a callback URL ends, POST its result there, signed with Standard Webhooks.

Deliveries go through their own SQS queue so the worker never waits on a receiver: the dispatcher enqueues
``{"request_id", "generation"}`` when a request with a callback ends (``citeq.dispatch``); the callback
function delivers and, on failure, hands the message back with the next delay of ``SCHEDULE`` (seconds, then
minutes, then hours: about a day in all). Every attempt is recorded on the request, and the generation
delivered (``callback_done``), so a duplicate job does not deliver twice. URLs that resolve to loopback,
private, link-local or reserved addresses are refused unless their host is in ``CITEQ_CALLBACK_ALLOW_HOSTS``
(how local runs use 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from citeq.errors import ConfigurationError
from citeq.store import RequestItem, Store
from citeq.webhooks import sign

# Delay before attempt n+1 (seconds): 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h -> ~16 h of retries
# after the first try, the last attempt about a day after the request ended.
SCHEDULE = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
TIMEOUT = (5.0, 10.0)
EVENT_TYPE = "citeq.request.finished"


class UnsafeURL(ValueError):
    """A callback URL that must not be called from AWS."""


def check_url(url: str, allow_hosts: Sequence[str], resolve: Callable[..., Any] = socket.getaddrinfo) -> None:
    """Refuse non-HTTP(S) URLs and hosts resolving to internal addresses (unless allow-listed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("callback URL must be http(s) with a host")
    if parts.hostname in allow_hosts:
        return
    try:
        infos = resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise UnsafeURL(f"callback host does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise UnsafeURL(f"callback host resolves to a non-public address ({address})")


def payload(item: RequestItem) -> dict[str, Any]:
    """What the receiver gets: the result, with the caller's own fields echoed back."""
    return {
        "type": EVENT_TYPE,
        "request_id": item.request_id,
        "custom_id": item.custom_id,
        "status": item.status,
        "answer": item.answer,
        "error": item.error,
        "metadata": item.metadata,
        "attempts": item.attempts,
        "finished_at": item.finished_at,
    }


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt."""

    delivered: bool
    status: int | None
    error: str | None
    retry_in: float | None  # None: no further attempt


class Deliverer:
    """Delivers callbacks and records each attempt."""

    def __init__(
        self,
        store: Store,
        secret: str | Callable[[], str],
        *,
        allow_hosts: Sequence[str] = (),
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        resolve: Callable[..., Any] = socket.getaddrinfo,
    ) -> None:
        self.store = store
        # A callable is asked on every delivery (a secret from Secrets Manager, which may be rotated).
        self._secret = secret if callable(secret) else (lambda: secret)
        self.allow_hosts = allow_hosts
        self.session = session or requests.Session()
        self.clock = clock
        self.resolve = resolve

    def deliver(self, request_id: str, attempt: int) -> Outcome:
        """Attempt ``attempt`` (1-based) for one request; records it and says when to try again."""
        item = self.store.get(request_id)
        if item is None or not item.callback or item.status not in ("succeeded", "failed"):
            return Outcome(False, None, "nothing to deliver", None)
        if item.callback_done is not None and item.callback_done >= item.generation:
            return Outcome(True, None, None, None)  # a duplicate job: this generation's callback went already
        url = str(item.callback.get("url", ""))
        body = json.dumps(payload(item), separators=(",", ":")).encode()
        status: int | None = None
        error: str | None = None
        try:
            check_url(url, self.allow_hosts, self.resolve)
            # The same webhook-id on every attempt, so receivers can drop duplicates.
            headers = {
                "Content-Type": "application/json",
                **sign(self._secret(), f"{item.request_id}.{item.generation}", int(self.clock()), body),
            }
            response = self.session.post(url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False)
            status = response.status_code
            response.close()
            if not 200 <= status < 300:
                error = f"receiver answered {status}"
        except UnsafeURL as exc:
            error = str(exc)
        except ConfigurationError:
            error = "the signing secret is not available"
        except requests.RequestException as exc:
            error = f"delivery failed: {type(exc).__name__}"
        delivered = error is None
        if delivered:
            self.store.mark_callback_done(item.request_id, item.generation)
        permanent = isinstance(error, str) and ("non-public" in error or "must be http" in error)
        retry_in = None if delivered or permanent or attempt > len(SCHEDULE) else float(SCHEDULE[attempt - 1])
        self.store.record_delivery(
            item.request_id,
            {
                "attempt": attempt,
                "at": self.clock(),
                "status": status,
                "error": error,
                "next_attempt_in": retry_in,
            },
        )
        return Outcome(delivered, status, error, retry_in)
