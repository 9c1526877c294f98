from __future__ import annotations

import base64
import hashlib
import random
import re
from pathlib import Path
from typing import Any

import pytest

from citeq import config
from citeq.config import DEFAULT_API_VERSION, Caller, Secret, Settings
from citeq.errors import ConfigurationError

_RNG = random.Random(11)


def _whsec(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(_RNG.randbytes(size)).decode()


CB, NEW, OLD, ENV, SM = (_whsec() for _ in range(5))


def test_from_env_reads_names_and_defaults() -> None:
    settings = Settings.from_env({"PINECONE_API_KEY": "k", "CITEQ_ASSISTANT": "a", "CITEQ_PINECONE_HOST": "http://h/"})
    assert settings.api_key == Secret("k")
    assert settings.assistant == "a"
    assert settings.pinecone_host == "http://h"
    assert settings.api_version == DEFAULT_API_VERSION
    assert settings.assistant_host is None


ROOT = Path(__file__).resolve().parents[3]
DIGEST = hashlib.sha256(b"a bearer key").hexdigest()
# (variable, value, setting, what the setting holds): one row per variable Settings reads.
READS: list[tuple[str, str, str, Any]] = [
    ("PINECONE_API_KEY", "pcsk_from_the_table", "api_key", Secret("pcsk_from_the_table")),
    ("CITEQ_API_KEY_SECRET", "arn:key", "api_key_secret", "arn:key"),
    ("CITEQ_ASSISTANT", "helpdesk", "assistant", "helpdesk"),
    ("CITEQ_PINECONE_HOST", "http://cp.example/", "pinecone_host", "http://cp.example"),
    ("CITEQ_ASSISTANT_HOST", "http://dp.example/", "assistant_host", "http://dp.example"),
    ("CITEQ_API_VERSION", "2025-10", "api_version", "2025-10"),
    ("CITEQ_TABLE", "results", "table", "results"),
    ("CITEQ_QUEUE_URL", "https://sqs/q", "queue_url", "https://sqs/q"),
    ("CITEQ_DLQ_URL", "https://sqs/dlq", "dlq_url", "https://sqs/dlq"),
    ("CITEQ_CONNECT_TIMEOUT", "2.5", "connect_timeout", 2.5),
    ("CITEQ_READ_TIMEOUT", "30", "read_timeout", 30.0),
    ("CITEQ_STREAM_READ_TIMEOUT", "45", "stream_read_timeout", 45.0),
    ("CITEQ_MAX_ATTEMPTS", "2", "max_attempts", 2),
    ("CITEQ_RESULT_TTL_DAYS", "7", "result_ttl_days", 7),
    ("CITEQ_CALLBACK_SECRET", CB, "callback_secret", Secret(CB)),
    ("CITEQ_CALLBACK_SECRET_ARN", "arn:callback", "callback_secret_arn", "arn:callback"),
    ("CITEQ_WEBHOOK_SECRETS", NEW, "webhook_secrets", Secret(NEW)),
    ("CITEQ_WEBHOOK_SECRETS_ARN", "arn:webhooks", "webhook_secrets_arn", "arn:webhooks"),
    ("CITEQ_CALLBACK_ALLOW_HOSTS", "a.internal, b.internal", "callback_allow_hosts", ("a.internal", "b.internal")),
    ("CITEQ_CALLBACK_QUEUE_URL", "https://sqs/cb", "callback_queue_url", "https://sqs/cb"),
    ("CITEQ_MAX_RECEIVES", "4", "max_receives", 4),
    ("CITEQ_WORKER_CONCURRENCY", "3", "worker_concurrency", 3),
    ("CITEQ_TOKENS_PER_MINUTE", "enterprise", "tokens_per_minute", 1_000_000),
    ("CITEQ_TOKEN_WINDOW_SECONDS", "6", "token_window_seconds", 6.0),
    ("CITEQ_QUOTA_PROBE_SECONDS", "30", "quota_probe_seconds", 30.0),
    ("CITEQ_STRANDED_AFTER_SECONDS", "90", "stranded_after_seconds", 90.0),
    (
        "CITEQ_API_KEY_HASHES",
        f"{DIGEST.upper()}:helpdesk|docs, {DIGEST}",
        "callers",
        (Caller("key:" + DIGEST[:16], DIGEST, frozenset({"helpdesk", "docs"})), Caller("key:" + DIGEST[:16], DIGEST)),
    ),
    ("CITEQ_HEARTBEAT_SECONDS", "0.5", "heartbeat_seconds", 0.5),
    ("POWERTOOLS_METRICS_NAMESPACE", "Elsewhere", "metrics_namespace", "Elsewhere"),
    ("POWERTOOLS_METRICS_DISABLED", "true", "metrics_disabled", True),
]


@pytest.mark.parametrize(("variable", "value", "setting", "expected"), READS, ids=[row[0] for row in READS])
def test_from_env_reads_each_variable_into_its_setting(variable: str, value: str, setting: str, expected: Any) -> None:
    assert getattr(Settings.from_env({variable: value}), setting) == expected
    assert getattr(Settings.from_env({}), setting) != expected  # the value came from the variable


def test_every_variable_named_in_config_is_read_above_and_listed_in_the_readme() -> None:
    names = {
        value
        for name, value in vars(config).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"(CITEQ|PINECONE|POWERTOOLS)_[A-Z_]+", value)
    }
    assert names == {row[0] for row in READS}
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert sorted(name for name in names if f"`{name}`" not in section) == []


def test_no_function_reads_the_environment_but_settings() -> None:
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "functions").rglob("*.py")
        if re.search(r"\bos\.(environ|getenv)\b", path.read_text())
    ]
    assert readers == ["functions/citeq/config.py"]


@pytest.mark.parametrize(
    ("setting", "variable"),
    [
        ("table", "CITEQ_TABLE"),
        ("queue_url", "CITEQ_QUEUE_URL"),
        ("dlq_url", "CITEQ_DLQ_URL"),
        ("callback_queue_url", "CITEQ_CALLBACK_QUEUE_URL"),
        ("assistant", "CITEQ_ASSISTANT"),
        ("api_key", "PINECONE_API_KEY (or CITEQ_API_KEY_SECRET in Lambda)"),
        ("callback_secret", "CITEQ_CALLBACK_SECRET (or CITEQ_CALLBACK_SECRET_ARN)"),
        ("webhook_secrets", "CITEQ_WEBHOOK_SECRETS (or CITEQ_WEBHOOK_SECRETS_ARN)"),
    ],
)
def test_a_missing_required_setting_names_its_variable(setting: str, variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({}).require(setting)
    assert str(info.value) == f"{variable} is not set"


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("CITEQ_API_KEY_HASHES", f"{DIGEST},not-a-digest", "entry 2 is not a SHA-256 hex digest"),
        ("CITEQ_API_KEY_HASHES", f"{DIGEST}:Not_A_Name", "entry 1 names an invalid assistant"),
        ("CITEQ_HEARTBEAT_SECONDS", "0", "must be positive"),
        ("POWERTOOLS_METRICS_DISABLED", "perhaps", "must be true or false"),
        ("CITEQ_ASSISTANT", "My Assistant", "must be 1-63 lowercase letters, digits or '-', got 'My Assistant'"),
    ],
)
def test_a_malformed_value_names_the_variable_and_never_a_digest(variable: str, value: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{variable}.*{why}") as info:
        Settings.from_env({variable: value})
    assert DIGEST not in str(info.value)


def test_argument_beats_environment_beats_default() -> None:
    settings = Settings.from_env({"CITEQ_ASSISTANT": "env", "CITEQ_READ_TIMEOUT": "9"}, assistant="arg")
    assert settings.assistant == "arg"
    assert settings.read_timeout == 9.0
    assert Settings.from_env({}).read_timeout == 120.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CITEQ_READ_TIMEOUT", "soon"),
        ("CITEQ_MAX_ATTEMPTS", "-1"),
        ("CITEQ_HEARTBEAT_SECONDS", "abc"),
        ("CITEQ_HEARTBEAT_SECONDS", "nan"),
        ("CITEQ_READ_TIMEOUT", "inf"),
        ("CITEQ_CONNECT_TIMEOUT", "1e999"),
        ("CITEQ_TOKEN_WINDOW_SECONDS", "-inf"),
        ("CITEQ_TOKENS_PER_MINUTE", "-5"),
        ("CITEQ_TOKENS_PER_MINUTE", "lots"),
    ],
)
def test_invalid_number_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} must ") as info:
        Settings.from_env({name: value})
    assert repr(value) in str(info.value)


def test_missing_required_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="CITEQ_TABLE"):
        Settings.from_env({}).require("table")
    with pytest.raises(ConfigurationError, match="PINECONE_API_KEY"):
        Settings.from_env({}).resolve_api_key()


def test_key_never_in_repr_or_str() -> None:
    settings = Settings.from_env({"PINECONE_API_KEY": "pcsk_supersecret"})
    assert "supersecret" not in repr(settings)
    assert "supersecret" not in str(settings.api_key)
    assert "supersecret" not in f"{settings.api_key}"
    assert settings.resolve_api_key().get() == "pcsk_supersecret"


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Any:
    """moto's Secrets Manager in process, and an empty Powertools cache before and after."""
    import boto3
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")
    parameters.clear_caches()


def test_secrets_come_from_secrets_manager_when_given_as_arns(secretsmanager: Any) -> None:
    def arn(name: str, value: str) -> str:
        return str(secretsmanager.create_secret(Name=name, SecretString=value)["ARN"])

    settings = Settings.from_env(
        {
            "CITEQ_API_KEY_SECRET": arn("key", "pcsk_from_sm\n"),
            "CITEQ_CALLBACK_SECRET_ARN": arn("callback", CB),
            "CITEQ_WEBHOOK_SECRETS_ARN": arn("webhooks", f"{NEW}, {OLD}"),
        }
    )
    settings.require("api_key", "callback_secret", "webhook_secrets")
    assert settings.resolve_api_key().get() == "pcsk_from_sm"
    assert settings.resolve_callback_secret().get() == CB
    assert [s.get() for s in settings.resolve_webhook_secrets()] == [NEW, OLD]
    assert "whsec" not in repr(settings.resolve_webhook_secrets()) and "pcsk" not in repr(settings)


def test_a_value_in_the_environment_wins_over_the_arn(secretsmanager: Any) -> None:
    secret_arn = secretsmanager.create_secret(Name="webhooks", SecretString=SM)["ARN"]
    settings = Settings.from_env({"CITEQ_WEBHOOK_SECRETS": ENV, "CITEQ_WEBHOOK_SECRETS_ARN": secret_arn})
    assert [s.get() for s in settings.resolve_webhook_secrets()] == [ENV]


def test_an_unreadable_or_empty_secret_is_a_configuration_error_naming_the_variable(secretsmanager: Any) -> None:
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf"
    with pytest.raises(ConfigurationError, match="CITEQ_CALLBACK_SECRET_ARN"):
        Settings.from_env({"CITEQ_CALLBACK_SECRET_ARN": missing}).resolve_callback_secret()
    empty = secretsmanager.create_secret(Name="blank", SecretString=" , ")["ARN"]
    with pytest.raises(ConfigurationError, match="holds no secret"):
        Settings.from_env({"CITEQ_WEBHOOK_SECRETS_ARN": empty}).resolve_webhook_secrets()
    with pytest.raises(ConfigurationError, match="CITEQ_WEBHOOK_SECRETS"):
        Settings.from_env({}).require("webhook_secrets")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "24 to 64 random bytes; this one has 23"),
        ("whsec_" + base64.b64encode(bytes(range(65))).decode(), "this one has 65"),
        ("whsec_" + base64.b64encode(b"\0" * 32).decode(), "not a repeated pattern"),
        ("whsec_", "this one has 0"),
    ],
)
def test_a_malformed_or_short_secret_is_refused_at_load_naming_the_setting_not_the_value(value: str, why: str) -> None:
    with pytest.raises(ConfigurationError) as callback:
        Settings.from_env({"CITEQ_CALLBACK_SECRET": value}).resolve_callback_secret()
    assert "CITEQ_CALLBACK_SECRET" in str(callback.value) and why in str(callback.value)
    with pytest.raises(ConfigurationError) as webhook:
        Settings.from_env({"CITEQ_WEBHOOK_SECRETS": f"{NEW},{value}"}).resolve_webhook_secrets()
    assert "CITEQ_WEBHOOK_SECRETS" in str(webhook.value) and "entry 2" in str(webhook.value)
    for error in (callback.value, webhook.value):
        assert value.removeprefix("whsec_") not in str(error) or value == "whsec_"


def test_webhook_senders_are_named_and_rotate_under_one_name() -> None:
    settings = Settings.from_env({"CITEQ_WEBHOOK_SECRETS": f"acme={NEW}, acme={OLD},{ENV}"})
    assert [(name, secret.get()) for name, secret in settings.resolve_webhook_senders()] == [
        ("acme", NEW),
        ("acme", OLD),
        ("default", ENV),
    ]


def test_no_log_level_prints_a_secret_even_botocore_debug(secretsmanager: Any) -> None:
    import logging

    value = _whsec()
    arn = secretsmanager.create_secret(Name="guarded", SecretString=value)["ARN"]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    root = logging.getLogger()
    handler = Collect(logging.DEBUG)
    saved = root.level, logging.getLogger("botocore").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # what Lambda's ApplicationLogLevel=DEBUG does
    logging.getLogger("botocore").setLevel(logging.NOTSET)
    try:
        secret = Settings.from_env({"CITEQ_CALLBACK_SECRET_ARN": arn}).resolve_callback_secret()
        logging.getLogger("citeq.test").debug("careless: %s and %r", secret.get(), {"k": secret.get()})
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("botocore").setLevel(saved[1])
    text = "\n".join(records)
    assert secret.get() == value and "careless: **********" in text
    assert value.removeprefix("whsec_") not in text
