from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from citeq.config import DEFAULT_API_VERSION, Secret, Settings
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


def test_argument_beats_environment_beats_default() -> None:
    settings = Settings.from_env({"CITEQ_ASSISTANT": "env", "CITEQ_READ_TIMEOUT": "9"}, assistant="arg")
    assert settings.assistant == "arg"
    assert settings.read_timeout == 9.0
    assert Settings.from_env({}).read_timeout == 120.0


@pytest.mark.parametrize(("name", "value"), [("CITEQ_READ_TIMEOUT", "soon"), ("CITEQ_MAX_ATTEMPTS", "-1")])
def test_invalid_number_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


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
