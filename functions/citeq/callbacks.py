"""Callbacks: when a request with a callback URL ends, POST its result there, signed with Standard Webhooks.

Deliveries go through their own SQS queue so the worker never waits on a receiver: the dispatcher enqueues
``{"request_id", "generation"}`` when a request with a callback ends (``citeq.dispatch``); the callback
function delivers and, on failure, hands the message back with the next delay of ``SCHEDULE`` (seconds, then
minutes, then hours: about a day in all). Every attempt is recorded on the request, and the generation
delivered (``callback_done``), so a duplicate job does not deliver twice.

Server-side request forgery (OWASP SSRF prevention cheat sheet; issue 11):

* one parser (``parse_url``) for the check and the connection, strict enough that no two URL parsers can read
  a different host out of the same string (no ``\\``, userinfo, whitespace, percent-encoded or odd numeric hosts);
* the host is resolved once, every address must be public (``is_global``: loopback, private, link-local,
  shared 100.64.0.0/10, documentation, multicast and reserved ranges are all refused), and the connection goes
  to that very address (TLS still verifies the host name), so a second DNS answer cannot redirect it;
* schemes and ports are checked at intake too, where a literal internal address is a 400;
* one delivery has a total deadline (``DEADLINE_SECONDS``), however slowly the receiver drips bytes.

Hosts listed in ``CITEQ_CALLBACK_ALLOW_HOSTS`` skip the address check (how local runs use 127.0.0.1).

Each caller has its own signing secret, derived from the callback secret and the caller's id
(``caller_secret``), so one receiver cannot forge callbacks to another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from citeq.errors import ConfigurationError, WebhookError
from citeq.models import RequestRecord
from citeq.store import Store
from citeq.webhooks import PREFIX, secret_bytes, sign

# Delay before attempt n+1 (seconds): 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h -> ~16 h of retries
# after the first try, the last attempt about a day after the request ended.
SCHEDULE = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
CONNECT_TIMEOUT = 5.0
# Connect, send and read the status line and headers, all within this (issue 11: a slow receiver cannot hold
# the callback function; three deliveries in a row fit its 30 s timeout).
DEADLINE_SECONDS = 9.0
EVENT_TYPE = "citeq.request.finished"
# Ports a public receiver may use (OWASP: allow-list ports, so a callback cannot probe mail, SSH or databases).
PUBLIC_PORTS = frozenset({80, 443, 8080, 8443})
MAX_URL = 2048
MAX_RESPONSE_HEAD = 16_384
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PATH = re.compile(r"^[!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]*$")
_CALLER_KEY_CONTEXT = b"citeq-callback-signing-v1:"


class UnsafeURL(ValueError):
    """A callback URL that must not be called (bad syntax, scheme or port, or an internal address).

    ``permanent`` is False only when the host did not resolve (DNS may answer later)."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    """A parsed callback URL: what the check looks at is exactly what the connection uses."""

    scheme: str
    host: str  # lower-case name, or an IP address without brackets
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address when it is a literal one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def host_header(self) -> str:
        """The Host header: the name (bracketed for IPv6), with the port when it is not the scheme's default."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def parse_url(url: str) -> Target:
    """A callback URL -> Target, or UnsafeURL saying what is wrong with it (syntax, scheme, host or port)."""
    if not isinstance(url, str) or not url:
        raise UnsafeURL("callback URL must be a non-empty string")
    if len(url) > MAX_URL:
        raise UnsafeURL(f"callback URL is longer than {MAX_URL} characters")
    # Characters that URL parsers disagree on (WHATWG treats '\' as '/', some strip tabs and newlines): refused,
    # so the host checked here is the host every parser would see.
    if any(c in url for c in "\\ \t\r\n") or not url.isascii() or not url.isprintable():
        raise UnsafeURL("callback URL holds a backslash, whitespace or a non-ASCII character")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeURL("callback URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("callback URL must be http(s) with a host")
    authority = parts.netloc
    if not authority:
        raise UnsafeURL("callback URL must be http(s) with a host")
    if "@" in authority:
        raise UnsafeURL("callback URL must not carry a user name or password")
    if "%" in authority:
        raise UnsafeURL("callback URL host must not be percent-encoded")
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeURL("callback URL has an invalid IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise UnsafeURL("callback URL has an invalid authority")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = authority.partition(":")
        host = host.lower()
        if not _HOST.match(host):
            raise UnsafeURL("callback URL host is not a valid host name or IPv4 address")
        labels = host.rstrip(".").split(".")
        if _NUMERIC_LABEL.match(labels[-1]):
            # Only the canonical dotted quad: '127.1', '0x7f.1' and '2130706433' are loopback to getaddrinfo.
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise UnsafeURL("callback URL host is an IP address in a non-standard form") from None
    if port_text == "" and ":" in authority.removeprefix("[").split("]")[-1]:
        raise UnsafeURL("callback URL has an empty port")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UnsafeURL("callback URL port must be a number from 1 to 65535")
        port = int(port_text)
    else:
        port = 443 if scheme == "https" else 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not _PATH.match(path):
        raise UnsafeURL("callback URL path holds characters that must be percent-encoded")
    return Target(scheme, host, port, path)


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global is False for every special-purpose range of the IANA registries, 100.64.0.0/10 included.
    return address.is_global and not address.is_multicast


def _allowed(target: Target, allow_hosts: Sequence[str]) -> bool:
    return target.host in allow_hosts


def check_target(target: Target, allow_hosts: Sequence[str]) -> None:
    """Raise UnsafeURL for a port outside PUBLIC_PORTS or a literal non-public address (not allow-listed)."""
    if _allowed(target, allow_hosts):
        return
    if target.port not in PUBLIC_PORTS:
        raise UnsafeURL(f"callback URL port must be one of {', '.join(map(str, sorted(PUBLIC_PORTS)))}")
    address = target.address
    if address is not None and not _public(address):
        raise UnsafeURL(f"callback host is a non-public address ({address})")
    name = target.host.rstrip(".")
    if address is None and (name == "localhost" or name.endswith(".localhost") or "." not in name):
        raise UnsafeURL("callback host is a non-public name")


def check_url_at_intake(
    url: str, allow_hosts: Sequence[str] = (), resolve: Callable[..., Any] | None = None
) -> Target:
    """Syntax, scheme, port and literal-address checks (a 400 at intake); with ``resolve``, also a name that
    resolves to a non-public address. A name that does not resolve (yet) passes: delivery checks again."""
    target = parse_url(url)
    check_target(target, allow_hosts)
    if resolve is not None:
        try:
            resolve_target(target, allow_hosts, resolve)
        except UnsafeURL as exc:
            if exc.permanent:
                raise
    return target


def resolve_target(
    target: Target, allow_hosts: Sequence[str], resolve: Callable[..., Any] = socket.getaddrinfo
) -> str:
    """The one address to connect to: every address the name resolves to must be public (unless allow-listed)."""
    check_target(target, allow_hosts)
    if target.address is not None:
        return str(target.address)
    try:
        infos = resolve(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"callback host does not resolve ({type(exc).__name__})", permanent=False) from exc
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except (ValueError, IndexError, TypeError):
            raise UnsafeURL("callback host resolves to something that is not an IP address") from None
    if not addresses:
        raise UnsafeURL("callback host does not resolve", permanent=False)
    if not _allowed(target, allow_hosts):
        for address in addresses:
            if not _public(address):
                raise UnsafeURL(f"callback host resolves to a non-public address ({address})")
    return str(addresses[0])


def check_url(url: str, allow_hosts: Sequence[str], resolve: Callable[..., Any] = socket.getaddrinfo) -> str:
    """Parse, check and resolve a callback URL; returns the address a delivery connects to, or raises UnsafeURL."""
    return resolve_target(parse_url(url), allow_hosts, resolve)


def caller_secret(secret: str, caller: str | None) -> str:
    """The ``whsec_`` secret that signs ``caller``'s callbacks: HMAC-SHA256 of the caller id under the callback
    secret (no caller: the callback secret itself). Raises WebhookError for a malformed secret."""
    key = secret_bytes(secret)
    if not caller:
        return secret
    derived = hmac.new(key, _CALLER_KEY_CONTEXT + caller.encode(), hashlib.sha256).digest()
    return PREFIX + base64.b64encode(derived).decode()


def payload(item: RequestRecord) -> dict[str, Any]:
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


# Why an attempt did not deliver, from the type of what went wrong (recorded with each attempt as "failure"):
#   unsafe_url          the URL or its address may not be called (UnsafeURL, permanent: not retried)
#   unresolved          the host did not resolve (UnsafeURL, not permanent)
#   secret_unavailable  the signing secret is missing or malformed (ConfigurationError, WebhookError)
#   unreachable         no connection, TLS failed, or no HTTP status came back (DeliveryFailed)
#   timed_out           the delivery's total deadline passed (DeliveryTimeout)
#   refused             the receiver answered, with a status other than 2xx
#   nothing_to_deliver  the request is unknown, has no callback or has not ended (not retried)
Failure = Literal[
    "unsafe_url", "unresolved", "secret_unavailable", "unreachable", "timed_out", "refused", "nothing_to_deliver"
]


@dataclass(frozen=True)
class Outcome:
    """One delivery attempt: ``status`` is the receiver's HTTP status when it answered, ``error`` a line for
    people, ``failure`` its class for code (None when delivered), ``retry_in`` seconds until the next attempt
    (None: no further attempt)."""

    delivered: bool
    status: int | None
    error: str | None
    retry_in: float | None
    failure: Failure | None = None


class DeliveryFailed(Exception):
    """The receiver could not be reached or gave no HTTP status (retried on the schedule)."""


class DeliveryTimeout(DeliveryFailed):
    """The delivery's total deadline passed before the receiver's status arrived (retried on the schedule)."""


def post_pinned(
    target: Target,
    address: str,
    body: bytes,
    headers: dict[str, str],
    *,
    deadline: float,
    monotonic: Callable[[], float] = time.monotonic,
    tls: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``address`` (already checked) as ``target``; returns the status code. Every socket
    operation is bounded by what is left of ``deadline`` (a ``monotonic`` instant); raises DeliveryFailed."""

    def remaining() -> float:
        left = deadline - monotonic()
        if left <= 0:
            raise DeliveryTimeout("deadline passed")
        return left

    try:
        sock = socket.create_connection((address, target.port), timeout=min(CONNECT_TIMEOUT, remaining()))
    except OSError as exc:  # a connect timeout included: the receiver is unreachable
        raise DeliveryFailed(f"could not connect ({type(exc).__name__})") from exc
    try:
        if target.scheme == "https":
            context = tls or ssl.create_default_context()
            sock.settimeout(remaining())
            # The certificate is checked against the URL's host name, not the pinned address.
            sock = context.wrap_socket(sock, server_hostname=target.host)
        lines = [
            f"POST {target.path} HTTP/1.1",
            f"Host: {target.host_header}",
            "Connection: close",
            "User-Agent: citeq-callback",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sock.settimeout(remaining())
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            sock.settimeout(remaining())
            data = sock.recv(4096)
            if not data:
                break
            head += data
            if len(head) > MAX_RESPONSE_HEAD:
                break
        status_line = head.split(b"\n", 1)[0].decode("latin-1").strip()
        match = re.match(r"^HTTP/\d(?:\.\d)? (\d{3})(?: |$)", status_line)
        if not match:
            raise DeliveryFailed("the receiver did not answer with an HTTP status")
        return int(match.group(1))
    except TimeoutError as exc:  # socket.timeout is TimeoutError
        raise DeliveryTimeout("deadline passed") from exc
    except OSError as exc:  # ssl.SSLError is an OSError
        raise DeliveryFailed(type(exc).__name__) from exc
    finally:
        sock.close()


class CallbackDeliverer:
    """Delivers callbacks and records each attempt."""

    def __init__(
        self,
        store: Store,
        secret: str | Callable[[], str],
        *,
        allow_hosts: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        resolve: Callable[..., Any] = socket.getaddrinfo,
        deadline_seconds: float = DEADLINE_SECONDS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        # A callable is asked on every delivery (a secret from Secrets Manager, which may be rotated).
        self._secret = secret if callable(secret) else (lambda: secret)
        self.allow_hosts = allow_hosts
        self.clock = clock
        self.monotonic = monotonic
        self.resolve = resolve
        self.deadline_seconds = deadline_seconds
        self.tls = tls

    def __repr__(self) -> str:
        return f"CallbackDeliverer(allow_hosts={self.allow_hosts!r})"

    def deliver(self, request_id: str, attempt: int, *, deadline: float | None = None) -> Outcome:
        """Attempt ``attempt`` (1-based) for one request; records it and says when to try again.

        ``deadline`` (a ``monotonic`` instant) can only shorten the delivery's own total deadline.
        """
        item = self.store.get(request_id)
        if item is None or not item.callback_url or item.status not in ("succeeded", "failed"):
            return Outcome(False, None, "nothing to deliver", None, "nothing_to_deliver")
        if item.callback_done is not None and item.callback_done >= item.generation:
            return Outcome(True, None, None, None)  # a duplicate job: this generation's callback went already
        until = self.monotonic() + self.deadline_seconds
        if deadline is not None:
            until = min(until, deadline)
        status: int | None = None
        error: str | None = None
        failure: Failure | None = None
        permanent = False
        try:
            target = parse_url(item.callback_url)
            address = resolve_target(target, self.allow_hosts, self.resolve)
            body = json.dumps(payload(item), separators=(",", ":")).encode()
            secret = caller_secret(self._secret(), item.caller)
            # The same webhook-id on every attempt, so receivers can drop duplicates.
            headers = {
                "Content-Type": "application/json",
                **sign(secret, f"{item.request_id}.{item.generation}", int(self.clock()), body),
            }
            status = post_pinned(
                target, address, body, headers, deadline=until, monotonic=self.monotonic, tls=self.tls
            )
            if not 200 <= status < 300:
                error, failure = f"receiver answered {status}", "refused"
        except UnsafeURL as exc:
            error, failure = str(exc), "unsafe_url" if exc.permanent else "unresolved"
            permanent = exc.permanent
        except (ConfigurationError, WebhookError):
            # Never the secret nor the reason it is malformed: the operator sees that in the function's log.
            error, failure = "the signing secret is not available", "secret_unavailable"
        except DeliveryFailed as exc:
            error = f"delivery failed: {exc}"
            failure = "timed_out" if isinstance(exc, DeliveryTimeout) else "unreachable"
        delivered = error is None
        if delivered:
            self.store.mark_callback_done(item.request_id, item.generation)
        retry_in = None if delivered or permanent or attempt > len(SCHEDULE) else float(SCHEDULE[attempt - 1])
        self.store.record_delivery(
            item.request_id,
            {
                "attempt": attempt,
                "at": self.clock(),
                "status": status,
                "error": error,
                "failure": failure,
                "next_attempt_in": retry_in,
            },
        )
        return Outcome(delivered, status, error, retry_in, failure)
