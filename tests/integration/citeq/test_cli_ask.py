"""``citeq ask`` against the emulator: streamed and default output, JSON, and clear failures."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys

from citeq.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Factory, main
from citeq.config import Settings
from infra.emulator import EmulatorServer
from tests.helpers import ASSISTANT

QUESTION = "What does a request over the rate limit receive?"


def _run(argv: list[str], settings: Settings) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, factory=Factory(settings), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _settings(emulator: EmulatorServer, **values: object) -> Settings:
    base: dict[str, object] = {"api_key": emulator.api_key, "pinecone_host": emulator.url, "assistant": ASSISTANT}
    return Settings.from_env({}, **{**base, **values})


def test_ask_streams_text_with_footnotes(emulator: EmulatorServer) -> None:
    code, out, err = _run(["ask", QUESTION], _settings(emulator))
    assert code == EXIT_OK, err
    assert "A request over the limit receives HTTP 429 with a Retry-After header" in out
    assert "seconds to wait[1]." in out
    assert "[1] lumen-api-guide.pdf, pp. 2" in out
    assert "References:" not in out and "storage.googleapis.com" not in out


def test_ask_no_stream_prints_the_same_text(emulator: EmulatorServer) -> None:
    streamed = _run(["ask", QUESTION], _settings(emulator))[1]
    code, out, _ = _run(["ask", "--no-stream", QUESTION], _settings(emulator))
    assert code == EXIT_OK
    assert out.strip() == streamed.strip()


def test_ask_json_prints_the_answer_object(emulator: EmulatorServer) -> None:
    code, out, _ = _run(["ask", "--json", "--filter", '{"kind": "manual"}', QUESTION], _settings(emulator))
    assert code == EXIT_OK
    answer = json.loads(out)
    assert set(answer) == {"id", "model", "finish_reason", "message", "citations", "usage", "raw_content"}
    assert answer["citations"][0]["references"][0]["file"]["name"] == "lumen-api-guide.pdf"
    assert answer["citations"][0]["references"][0]["pages"] == [2]


def test_ask_missing_key_is_a_usage_error(emulator: EmulatorServer) -> None:
    settings = Settings.from_env({}, pinecone_host=emulator.url, assistant=ASSISTANT)
    code, _, err = _run(["ask", QUESTION], settings)
    assert code == EXIT_USAGE
    assert "PINECONE_API_KEY" in err


def test_ask_unknown_assistant_says_so(emulator: EmulatorServer) -> None:
    code, _, err = _run(["ask", "--assistant", "nobody", QUESTION], _settings(emulator))
    assert code == EXIT_ERROR
    assert 'Assistant "nobody" not found' in err


def test_ask_bad_filter_is_a_usage_error(emulator: EmulatorServer) -> None:
    code, _, err = _run(["ask", "--filter", "{oops", QUESTION], _settings(emulator))
    assert code == EXIT_USAGE and "--filter" in err


def test_ask_network_failure_is_reported(emulator: EmulatorServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = _settings(emulator, assistant_host=f"http://127.0.0.1:{port}", max_attempts=1)
    code, _, err = _run(["ask", QUESTION], settings)
    assert code == EXIT_ERROR
    assert "could not reach the assistant" in err


def test_console_script_runs_against_the_emulator(emulator: EmulatorServer) -> None:
    script = shutil.which("citeq", path=os.path.dirname(sys.executable))
    assert script is not None
    env = {
        **os.environ,
        "PINECONE_API_KEY": emulator.api_key,
        "CITEQ_PINECONE_HOST": emulator.url,
        "CITEQ_ASSISTANT": ASSISTANT,
    }
    result = subprocess.run([script, "ask", QUESTION], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "[1] lumen-api-guide.pdf, pp. 2" in result.stdout


def test_ask_context_options_prints_the_whole_answer_from_the_standard_chat(emulator: EmulatorServer) -> None:
    plain = _run(["ask", "--no-stream", QUESTION], _settings(emulator))[1]
    # Streamed by default, but the standard chat that takes context_options has no stream: no error, one answer.
    code, out, err = _run(["ask", "--context-options", '{"top_k": 16}', QUESTION], _settings(emulator))
    assert code == EXIT_OK, err
    assert out.strip() == plain.strip()
    code, out, _ = _run(["ask", "--json", "--context-options", '{"top_k": 16}', QUESTION], _settings(emulator))
    assert code == EXIT_OK
    assert json.loads(out)["citations"][0]["references"][0]["file"]["name"] == "lumen-api-guide.pdf"


def test_ask_every_chat_option_has_a_flag_checked_like_everywhere_else(emulator: EmulatorServer) -> None:
    code, _, err = _run(
        ["ask", "--temperature", "0.5", "--model", "gpt-4o", "--no-stream", QUESTION], _settings(emulator)
    )
    assert code == EXIT_OK, err
    for argv, words in [
        (["--context-options", '{"top_k": 0}'], "context_options.top_k must be an integer from 1 to 64"),
        (
            ["--context-options", '{"top_k": 4, "top_k": 5}'],
            "--context-options: the key 'top_k' appears more than once",
        ),
        (["--temperature", "hot"], "--temperature must be a number"),
        (["--temperature", "nan"], "temperature must be a number from 0 to 2"),
        (["--filter", '{"kind": NaN}'], "--filter: NaN is not a JSON number"),
    ]:
        code, _, err = _run(["ask", *argv, QUESTION], _settings(emulator))
        assert code == EXIT_USAGE and words in err, (argv, err)
