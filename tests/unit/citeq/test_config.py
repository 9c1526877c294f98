from __future__ import annotations

import pytest

from citeq.config import DEFAULT_API_VERSION, Secret, Settings
from citeq.errors import ConfigurationError


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
