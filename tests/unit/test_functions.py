"""Every function is built from ``Settings`` by its own builder (issue 13): the template's handler names and
environment build each one, a missing required variable fails naming it, and importing a handler module reads
nothing and builds nothing."""

from __future__ import annotations

import base64
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from citeq.config import Settings
from citeq.errors import ConfigurationError
from infra.local.template import load

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load()
FUNCTIONS = {
    name: resource["Properties"]
    for name, resource in TEMPLATE["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}
WHSEC = "whsec_" + base64.b64encode(b"a-test-secret-of-thirty-two-byte").decode()


def _entry_point(handler: str) -> tuple[str, str]:
    """``(module, attribute)`` Lambda (or, for the stream function, uvicorn ``--factory``) starts from."""
    if handler.endswith(".sh"):
        script = (ROOT / "functions" / handler).read_text()
        found = re.search(r"--factory (\S+):(\S+)", script)
        assert found, f"{handler} does not start uvicorn with --factory"
        return found.group(1), found.group(2)
    module, _, attribute = handler.rpartition(".")
    return module, attribute


def _builder(handler: str) -> Callable[[Settings], Any]:
    """The builder next to a template handler: ``build`` in its module (the stream app's factory itself)."""
    module, attribute = _entry_point(handler)
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute if attribute == "create_app" else "build")


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_importing_a_handler_module_builds_nothing_and_its_entry_point_is_callable(function: str) -> None:
    module, attribute = _entry_point(FUNCTIONS[function]["Handler"])
    loaded = importlib.import_module(module)
    assert callable(getattr(loaded, attribute))
    assert getattr(loaded, "_handler", None) is None
    assert not any(name in vars(loaded) for name in ("settings", "store", "queue", "deliverer", "app", "KEYS"))


@pytest.fixture
def deployed_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], dict[str, str]]]:
    """Factory: a function's environment as the template sets it (Globals, then the function's own), with
    parameters at their defaults, resources named after themselves and the secrets' ARNs real (moto)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        secrets = boto3.client("secretsmanager")
        arns = {
            "ApiKeySecretArn": secrets.create_secret(Name="key", SecretString="pcsk_template_test")["ARN"],
            "CallbackSecretArn": secrets.create_secret(Name="callback", SecretString=WHSEC)["ARN"],
            "WebhookSecretsArn": secrets.create_secret(Name="webhooks", SecretString=WHSEC)["ARN"],
        }
        parameters = TEMPLATE["Parameters"]

        def value(raw: Any) -> str:
            if not isinstance(raw, dict):
                return str(raw)
            name = raw["Ref"]
            if name in arns:
                return str(arns[name])
            if name in parameters:
                return str(parameters[name].get("Default", ""))
            return f"{name}-of-the-stack"

        def environment(function: str) -> dict[str, str]:
            variables = {
                **TEMPLATE["Globals"]["Function"]["Environment"]["Variables"],
                **FUNCTIONS[function].get("Environment", {}).get("Variables", {}),
            }
            return {name: value(raw) for name, raw in variables.items()}

        yield environment


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_builds_from_the_environment_the_template_gives_it(
    function: str, deployed_env: Callable[[str], dict[str, str]]
) -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    try:
        assert _builder(FUNCTIONS[function]["Handler"])(Settings.from_env(deployed_env(function))) is not None
    finally:
        parameters.clear_caches()


CONFIGURED = {"CITEQ_TABLE": "t", "CITEQ_QUEUE_URL": "q", "CITEQ_DLQ_URL": "d", "PINECONE_API_KEY": "pcsk_k"}


@pytest.mark.parametrize(
    ("module", "builder", "missing"),
    [
        ("worker.app", "build", "CITEQ_TABLE"),
        ("worker.app", "build", "CITEQ_QUEUE_URL"),
        ("worker.app", "build", "PINECONE_API_KEY"),
        ("dispatcher.app", "build", "CITEQ_QUEUE_URL"),
        ("reconciler.app", "build", "CITEQ_TABLE"),
        ("reconciler.app", "build", "CITEQ_DLQ_URL"),
        ("callback.app", "build", "CITEQ_TABLE"),
        ("callback.app", "build", "CITEQ_CALLBACK_SECRET"),
        ("callback.app", "build", "CITEQ_CALLBACK_QUEUE_URL"),
        ("webhook.app", "build", "CITEQ_TABLE"),
        ("webhook.app", "build", "CITEQ_WEBHOOK_SECRETS"),
        ("stream.app", "create_app", "CITEQ_TABLE"),
        ("stream.app", "create_app", "PINECONE_API_KEY"),
    ],
)
def test_a_builder_without_a_required_variable_fails_naming_it(module: str, builder: str, missing: str) -> None:
    environ = {
        **CONFIGURED,
        "CITEQ_CALLBACK_SECRET": WHSEC,
        "CITEQ_CALLBACK_QUEUE_URL": "cq",
        "CITEQ_WEBHOOK_SECRETS": WHSEC,
    }
    del environ[missing]
    with pytest.raises(ConfigurationError, match=missing):
        getattr(importlib.import_module(module), builder)(Settings.from_env(environ))

