"""Settings, read once from the environment (the same names locally and in Lambda).

Precedence: an explicit argument > the environment > the default. A missing required value fails with a
message naming the variable. The API key and the webhook and callback secrets are ``Secret``s: they never
show in ``repr``, logs or errors. Each can be given as a value (local use) or, in Lambda, as the ARN of a
Secrets Manager secret, read through Powertools (cached for 5 minutes, so a rotated secret reaches running
functions within that time).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from citeq.errors import ConfigurationError, WebhookError
from citeq.models import ASSISTANT_NAME
from citeq.webhooks import secret_bytes

# Environment variable names, in one place.
PINECONE_API_KEY = "PINECONE_API_KEY"
API_KEY_SECRET = "CITEQ_API_KEY_SECRET"
ASSISTANT = "CITEQ_ASSISTANT"
PINECONE_HOST = "CITEQ_PINECONE_HOST"
ASSISTANT_HOST = "CITEQ_ASSISTANT_HOST"
API_VERSION = "CITEQ_API_VERSION"
TABLE = "CITEQ_TABLE"
QUEUE_URL = "CITEQ_QUEUE_URL"
DLQ_URL = "CITEQ_DLQ_URL"
CONNECT_TIMEOUT = "CITEQ_CONNECT_TIMEOUT"
READ_TIMEOUT = "CITEQ_READ_TIMEOUT"
STREAM_READ_TIMEOUT = "CITEQ_STREAM_READ_TIMEOUT"
MAX_ATTEMPTS = "CITEQ_MAX_ATTEMPTS"
RESULT_TTL_DAYS = "CITEQ_RESULT_TTL_DAYS"
CALLBACK_SECRET = "CITEQ_CALLBACK_SECRET"
CALLBACK_SECRET_ARN = "CITEQ_CALLBACK_SECRET_ARN"
WEBHOOK_SECRETS = "CITEQ_WEBHOOK_SECRETS"
WEBHOOK_SECRETS_ARN = "CITEQ_WEBHOOK_SECRETS_ARN"
CALLBACK_ALLOW_HOSTS = "CITEQ_CALLBACK_ALLOW_HOSTS"
CALLBACK_QUEUE_URL = "CITEQ_CALLBACK_QUEUE_URL"
MAX_RECEIVES = "CITEQ_MAX_RECEIVES"
WORKER_CONCURRENCY = "CITEQ_WORKER_CONCURRENCY"
TOKENS_PER_MINUTE = "CITEQ_TOKENS_PER_MINUTE"
TOKEN_WINDOW_SECONDS = "CITEQ_TOKEN_WINDOW_SECONDS"
QUOTA_PROBE_SECONDS = "CITEQ_QUOTA_PROBE_SECONDS"
STRANDED_AFTER_SECONDS = "CITEQ_STRANDED_AFTER_SECONDS"
API_KEY_HASHES = "CITEQ_API_KEY_HASHES"
HEARTBEAT_SECONDS = "CITEQ_HEARTBEAT_SECONDS"
# Powertools reads these itself too; the worker reads them to name its metrics and to skip publishing them.
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
METRICS_DISABLED = "POWERTOOLS_METRICS_DISABLED"
# Chat input tokens per minute by plan (Pinecone's rate-limit page, current; shared/reference §7.2).
PLANS = {"starter": 100_000, "standard": 300_000, "enterprise": 1_000_000}

DEFAULT_PINECONE_HOST = "https://api.pinecone.io"
# A current stable API version (quarterly releases; what pinecone 10 sends).
DEFAULT_API_VERSION = "2026-07"
DEFAULT_METRICS_NAMESPACE = "Citeq"


# Libraries whose DEBUG output is wire dumps: botocore prints whole responses (a GetSecretValue's SecretString),
# request headers and credentials; urllib3 prints URLs. Lambda's ApplicationLogLevel=DEBUG lowers the root
# logger, which these inherit, so they are held at INFO whatever the root says (issue 11).
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiobotocore")
REDACTED = "**********"
_secret_values: set[str] = set()
_base_factory = logging.getLogRecordFactory()
_guard_installed = False


def _forms(value: str) -> set[str]:
    """A secret's value as it may show in text: itself, its key without whsec_, and JSON-escaped."""
    forms = {value, value.removeprefix("whsec_")}
    forms |= {form.replace("/", "\\/") for form in forms}
    return {form for form in forms if len(form) >= 8}


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _secret_values:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format is logging's problem, not ours
            return record
        if any(secret in message for secret in _secret_values):
            for secret in sorted(_secret_values, key=len, reverse=True):
                message = message.replace(secret, REDACTED)
            record.msg, record.args = message, None
    return record


def install_log_guard() -> None:
    """Hold wire-dumping loggers at INFO or above and redact every known secret value from any log record."""
    global _guard_installed
    for name in WIRE_LOGGERS:
        wire = logging.getLogger(name)
        if wire.getEffectiveLevel() < logging.INFO:
            wire.setLevel(logging.INFO)
    if not _guard_installed:
        _guard_installed = True
        logging.setLogRecordFactory(_redacting_factory)


def redact(value: str) -> None:
    """Register ``value`` (8+ characters) as a secret: from now on it shows as ********** in every log record."""
    _secret_values.update(_forms(value))
    install_log_guard()


class Secret:
    """A string that hides itself from repr, str and format, and is redacted from any log record."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        redact(value)

    def get(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def tokens_per_minute(raw: str | None) -> int | None:
    """``CITEQ_TOKENS_PER_MINUTE``: a positive number, a plan name (starter, standard, enterprise), or unset /
    ``0`` / ``none`` for no pacing."""
    if raw is None or raw.lower() in ("0", "none", "off"):
        return None
    if raw.lower() in PLANS:
        return PLANS[raw.lower()]
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        raise ConfigurationError(
            f"{TOKENS_PER_MINUTE} must be a number of tokens, a plan name ({', '.join(PLANS)}) or none, got {raw!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"{TOKENS_PER_MINUTE} must not be negative, got {raw!r}")
    return value or None


@dataclass(frozen=True)
class Caller:
    """An API key of the stream function as configured: its id (``key:`` + 16 hex of its SHA-256), the digest,
    and the assistants it may use (None: any)."""

    id: str
    # Not a secret, but the template keeps the list NoEcho: kept out of reprs (and so of logs) all the same.
    digest: str = field(repr=False)
    assistants: frozenset[str] | None = None

    def may_use(self, assistant: str) -> bool:
        """Whether this key may ask ``assistant``."""
        return self.assistants is None or assistant in self.assistants


def parse_callers(text: str) -> tuple[Caller, ...]:
    """``CITEQ_API_KEY_HASHES``: comma-separated entries ``<sha256 hex>`` or ``<sha256 hex>:<assistant>|…`` ->
    Callers; a malformed entry raises ConfigurationError naming the variable and the entry's number (never a
    key or digest)."""
    callers = []
    for number, entry in enumerate((e.strip() for e in text.split(",") if e.strip()), start=1):
        digest, _, limit = entry.partition(":")
        digest = digest.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigurationError(f"{API_KEY_HASHES} entry {number} is not a SHA-256 hex digest")
        assistants = None
        if limit.strip():
            names = frozenset(n.strip() for n in limit.split("|") if n.strip())
            if not all(ASSISTANT_NAME.match(n) for n in names):
                raise ConfigurationError(f"{API_KEY_HASHES} entry {number} names an invalid assistant")
            assistants = names
        callers.append(Caller("key:" + digest[:16], digest, assistants))
    return tuple(callers)


def _flag(name: str, raw: str | None) -> bool:
    """A true/false variable: 1/true/yes/on or 0/false/no/off (any case); unset is false."""
    if raw is None or raw.lower() in ("0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Everything citeq reads from its environment."""

    api_key: Secret | None = None
    api_key_secret: str | None = None
    assistant: str | None = None
    pinecone_host: str = DEFAULT_PINECONE_HOST
    assistant_host: str | None = None
    api_version: str = DEFAULT_API_VERSION
    table: str | None = None
    queue_url: str | None = None
    dlq_url: str | None = None
    connect_timeout: float = 5.0
    # Answers take many seconds (large prompts); the service sends nothing until it has the whole answer.
    read_timeout: float = 120.0
    # Streams get no keepalive while the model thinks, so allow a long gap between chunks.
    stream_read_timeout: float = 300.0
    max_attempts: int = 5
    result_ttl_days: int = 30
    callback_secret: Secret | None = None
    callback_secret_arn: str | None = None
    callback_allow_hosts: tuple[str, ...] = ()
    # Comma-separated: more than one during a rotation.
    webhook_secrets: Secret | None = None
    webhook_secrets_arn: str | None = None
    callback_queue_url: str | None = None
    # Failed attempts (5xx, timeouts, crashes) before a request fails; the queue's maxReceiveCount backs it up.
    max_receives: int = 6
    worker_concurrency: int = 10
    # The plan's chat input tokens per minute (a number or a plan name); None: calls are not paced.
    tokens_per_minute: int | None = None
    # The span the service counts tokens over (a minute); shorter only to test pacing quickly.
    token_window_seconds: float = 60.0
    # How long an assistant stays paused after a quota answer (403) before one request probes it.
    quota_probe_seconds: float = 300.0
    # How long a request must wait unchanged for a message before the sweep sends it a new one (citeq.sweep).
    stranded_after_seconds: float = 7200.0
    # The stream function's API keys (CITEQ_API_KEY_HASHES); none: its routes but /healthz answer 401.
    callers: tuple[Caller, ...] = ()
    # Seconds between SSE comments on a request stream that has nothing to say (keeps proxies from closing it).
    heartbeat_seconds: float = 15.0
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    metrics_disabled: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment; keyword arguments win over it. Invalid numbers fail naming the variable."""
        install_log_guard()
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, kind: type[float] | type[int], default: float) -> Any:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
            # not (value > 0), not value <= 0: NaN compares false both ways (a heartbeat of NaN never beat), and
            # inf (or 1e999) is no timeout or window at all.
            if not value > 0 or value == math.inf:
                raise ConfigurationError(f"{name} must be positive and finite, got {raw!r}")
            return value

        key = text(PINECONE_API_KEY)
        assistant = text(ASSISTANT)
        if assistant is not None and not ASSISTANT_NAME.match(assistant):
            # Else every request without its own assistant would be refused as the caller's mistake (a 400).
            raise ConfigurationError(f"{ASSISTANT} must be 1-63 lowercase letters, digits or '-', got {assistant!r}")
        callback = text(CALLBACK_SECRET)
        webhook = text(WEBHOOK_SECRETS)
        values: dict[str, Any] = {
            "api_key": Secret(key) if key else None,
            "api_key_secret": text(API_KEY_SECRET),
            "assistant": assistant,
            "pinecone_host": (text(PINECONE_HOST) or DEFAULT_PINECONE_HOST).rstrip("/"),
            "assistant_host": (text(ASSISTANT_HOST) or "").rstrip("/") or None,
            "api_version": text(API_VERSION) or DEFAULT_API_VERSION,
            "table": text(TABLE),
            "queue_url": text(QUEUE_URL),
            "dlq_url": text(DLQ_URL),
            "connect_timeout": number(CONNECT_TIMEOUT, float, cls.connect_timeout),
            "read_timeout": number(READ_TIMEOUT, float, cls.read_timeout),
            "stream_read_timeout": number(STREAM_READ_TIMEOUT, float, cls.stream_read_timeout),
            "max_attempts": number(MAX_ATTEMPTS, int, cls.max_attempts),
            "result_ttl_days": number(RESULT_TTL_DAYS, int, cls.result_ttl_days),
            "callback_secret": Secret(callback) if callback else None,
            "callback_secret_arn": text(CALLBACK_SECRET_ARN),
            "webhook_secrets": Secret(webhook) if webhook else None,
            "webhook_secrets_arn": text(WEBHOOK_SECRETS_ARN),
            "callback_queue_url": text(CALLBACK_QUEUE_URL),
            "max_receives": number(MAX_RECEIVES, int, cls.max_receives),
            "worker_concurrency": number(WORKER_CONCURRENCY, int, cls.worker_concurrency),
            "tokens_per_minute": tokens_per_minute(text(TOKENS_PER_MINUTE)),
            "token_window_seconds": number(TOKEN_WINDOW_SECONDS, float, cls.token_window_seconds),
            "quota_probe_seconds": number(QUOTA_PROBE_SECONDS, float, cls.quota_probe_seconds),
            "stranded_after_seconds": number(STRANDED_AFTER_SECONDS, float, cls.stranded_after_seconds),
            "callback_allow_hosts": tuple(
                h.strip() for h in (text(CALLBACK_ALLOW_HOSTS) or "").split(",") if h.strip()
            ),
            "callers": parse_callers(text(API_KEY_HASHES) or ""),
            "heartbeat_seconds": number(HEARTBEAT_SECONDS, float, cls.heartbeat_seconds),
            "metrics_namespace": text(METRICS_NAMESPACE) or DEFAULT_METRICS_NAMESPACE,
            "metrics_disabled": _flag(METRICS_DISABLED, text(METRICS_DISABLED)),
        }
        settings = cls(**values)
        given = {k: v for k, v in overrides.items() if v is not None}
        for name in ("api_key", "callback_secret", "webhook_secrets"):
            if isinstance(given.get(name), str):
                given[name] = Secret(given[name])
        return replace(settings, **given) if given else settings

    def require(self, *names: str) -> None:
        """Fail with the environment variable's name if any of ``names`` is unset."""
        env_names = {
            "api_key": f"{PINECONE_API_KEY} (or {API_KEY_SECRET} in Lambda)",
            "assistant": ASSISTANT,
            "table": TABLE,
            "queue_url": QUEUE_URL,
            "dlq_url": DLQ_URL,
            "callback_queue_url": CALLBACK_QUEUE_URL,
            "callback_secret": f"{CALLBACK_SECRET} (or {CALLBACK_SECRET_ARN})",
            "webhook_secrets": f"{WEBHOOK_SECRETS} (or {WEBHOOK_SECRETS_ARN})",
        }
        in_secrets_manager = {
            "api_key": self.api_key_secret,
            "callback_secret": self.callback_secret_arn,
            "webhook_secrets": self.webhook_secrets_arn,
        }
        known = {f.name for f in fields(self)}
        for name in names:
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            if getattr(self, name) is None and not in_secrets_manager.get(name):
                raise ConfigurationError(f"{env_names.get(name, name.upper())} is not set")

    def resolve_api_key(self) -> Secret:
        """The API key: from the environment, else from Secrets Manager."""
        return _value_or_secret(self.api_key, self.api_key_secret, PINECONE_API_KEY, API_KEY_SECRET)

    def resolve_callback_secret(self) -> Secret:
        """The secret that signs callbacks, checked (Standard Webhooks, 24-64 bytes); ConfigurationError naming
        the setting when missing, unreadable or malformed."""
        secret = _value_or_secret(self.callback_secret, self.callback_secret_arn, CALLBACK_SECRET, CALLBACK_SECRET_ARN)
        _check(secret, f"{CALLBACK_SECRET} (or {CALLBACK_SECRET_ARN})")
        return secret

    def resolve_webhook_senders(self) -> list[tuple[str, Secret]]:
        """``(sender, secret)`` pairs inbound webhooks may be signed with: entries ``[sender=]whsec_…``, several
        per sender during a rotation (no name: ``default``); each checked like the callback secret."""
        joined = _value_or_secret(self.webhook_secrets, self.webhook_secrets_arn, WEBHOOK_SECRETS, WEBHOOK_SECRETS_ARN)
        setting = f"{WEBHOOK_SECRETS} (or {WEBHOOK_SECRETS_ARN})"
        found = []
        for number, part in enumerate((p.strip() for p in joined.get().split(",") if p.strip()), start=1):
            name, equals, value = part.partition("=")
            if equals and _SENDER.match(name):
                sender, secret = name, Secret(value.strip())
            else:
                sender, secret = "default", Secret(part)
            _check(secret, f"{setting}, entry {number}")
            found.append((sender, secret))
        if not found:
            raise ConfigurationError(f"{setting} holds no secret")
        return found

    def resolve_webhook_secrets(self) -> list[Secret]:
        """The secrets inbound webhooks may be signed with (several while one is being rotated), each checked."""
        return [secret for _, secret in self.resolve_webhook_senders()]


# A webhook sender's name in ``sender=whsec_…`` (never starts with whsec_, so base64 padding is not mistaken).
_SENDER = re.compile(r"^(?!whsec_)[a-z0-9][a-z0-9_-]{0,62}$")


def _check(secret: Secret, setting: str) -> None:
    """ConfigurationError naming ``setting`` (never the value) unless ``secret`` is a usable whsec_ secret."""
    try:
        secret_bytes(secret.get())
    except WebhookError as exc:
        raise ConfigurationError(f"{setting} is not a usable Standard Webhooks secret: {exc}") from None


def _value_or_secret(value: Secret | None, arn: str | None, value_name: str, arn_name: str) -> Secret:
    if value is not None:
        return value
    if arn:
        return read_secret(arn, arn_name)
    raise ConfigurationError(f"{value_name} (or {arn_name}, a Secrets Manager secret) is not set")


def read_secret(arn: str, variable: str) -> Secret:
    """A Secrets Manager secret's string, through Powertools' cache; errors name the variable, never a value."""
    from aws_lambda_powertools.utilities import parameters

    install_log_guard()  # before the call: botocore at DEBUG would print the response holding the value
    try:
        value = parameters.get_secret(arn)
    except parameters.exceptions.GetParameterError as exc:
        raise ConfigurationError(f"could not read secret {arn!r} ({variable})") from exc
    return Secret(str(value).strip())
