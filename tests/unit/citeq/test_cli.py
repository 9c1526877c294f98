"""The batch commands' error reports (issue 11): bad input is named by line, never blamed on AWS credentials."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import pytest

from citeq.cli import EXIT_ERROR, EXIT_USAGE, Factory, _message, main
from citeq.config import Settings
from citeq.errors import StoreError


def _run(argv: list[str], aws: dict[str, str]) -> tuple[int, str, str]:
    settings = Settings.from_env({"CITEQ_TABLE": aws["ResultsTable"], "CITEQ_QUEUE_URL": aws["RequestsQueue"]})
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, factory=Factory(settings), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "bad",
    [
        '{"custom_id": "b", "question": "lone \\ud83d surrogate"}',
        '{"custom_id": "b", "question": "non-character \\ufffe"}',
        json.dumps({"custom_id": "b", "question": "q", "metadata": {"blob": "x" * 420_000}}),
        '{"custom_id": "b", "question": "q", "callback_url": "http://169.254.169.254/latest"}',
    ],
)
def test_batch_submit_reports_the_line_and_writes_nothing(aws: dict[str, str], tmp_path: Path, bad: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "question": "fine"}) + "\n" + bad + "\n", encoding="utf-8")
    code, _, err = _run(["batch", "submit", str(path), "--assistant", "citeq-demo"], aws)
    assert code == EXIT_USAGE and "invalid input" in err and "line 2:" in err and "Traceback" not in err
    assert "credentials" not in err
    assert boto3.client("dynamodb").scan(TableName=aws["ResultsTable"])["Count"] == 0
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws["RequestsQueue"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("ValidationException", "CITEQ_TABLE"),
        ("ItemCollectionSizeLimitExceededException", "CITEQ_TABLE"),
        ("UnrecognizedClientException", "credentials"),
        ("NoCredentialsError", "credentials"),
    ],
)
def test_only_identity_errors_suggest_checking_credentials(code: str, hint: str) -> None:
    message, exit_code = _message(StoreError(f"DynamoDB put_item failed: {code}", code=code))
    assert hint in message and exit_code == EXIT_ERROR
    assert ("credentials" in message) == (hint == "credentials")


def test_callback_secret_prints_a_callers_own_secret_and_refuses_malformed_callers() -> None:
    import base64
    import random

    from citeq.callbacks import caller_secret

    master = "whsec_" + base64.b64encode(random.Random(9).randbytes(32)).decode()
    factory = Factory(Settings.from_env({"CITEQ_CALLBACK_SECRET": master}))
    out, err = io.StringIO(), io.StringIO()
    assert main(["callback-secret", "webhook:acme"], factory=factory, out=out, err=err) == 0
    assert out.getvalue().strip() == caller_secret(master, "webhook:acme") != master
    assert main(["callback-secret", "acme"], factory=factory, out=out, err=err) == EXIT_USAGE
    assert "webhook:<sender>" in err.getvalue() and master not in err.getvalue()


def test_sweep_lists_stranded_requests_on_a_dry_run_and_sends_them_a_message_otherwise(aws: dict[str, str]) -> None:
    import time

    from citeq.models import ChatRequest, Request
    from citeq.store import Store

    old = Store(aws["ResultsTable"], clock=lambda: time.time() - 3600)  # stored an hour ago, unchanged since
    assert old.put_request(Request("r-stranded", ChatRequest.ask("q", "citeq-demo")), dispatch="tok")
    assert Store(aws["ResultsTable"]).put_request(Request("r-fresh", ChatRequest.ask("q", "citeq-demo")))
    code, out, _ = _run(["sweep", "--dry-run", "--stranded-after", "600"], aws)
    assert code == 0 and out.splitlines() == [
        "2 open requests examined, 1 stranded (dry run: nothing written; each would get a new message, or fail if"
        " out of attempts)",
        "  r-stranded",
    ]
    assert Store(aws["ResultsTable"]).get("r-stranded").dispatch == "tok"  # type: ignore[union-attr]
    code, out, _ = _run(["sweep", "--stranded-after", "600", "--json"], aws)
    assert code == 0 and json.loads(out) == {
        "skipped": None,
        "examined": 2,
        "stranded": 1,
        "redispatched": 1,
        "failed": 0,
        "dry_run": False,
        "stranded_ids": ["r-stranded"],
    }
    assert Store(aws["ResultsTable"]).get("r-stranded").dispatch != "tok"  # type: ignore[union-attr]
    # The default wait (two hours) finds nothing stranded among these.
    code, out, _ = _run(["sweep"], aws)
    assert code == 0 and out.startswith("2 open requests examined, 0 stranded")


def test_sweep_refuses_a_wait_that_is_not_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("nan", "0", "-5", "inf", "soon"):
        with pytest.raises(SystemExit) as exited:
            main(["sweep", "--stranded-after", bad])
        assert exited.value.code == EXIT_USAGE and "--stranded-after" in capsys.readouterr().err


def test_results_to_a_path_that_cannot_be_written_is_one_line_and_a_usage_error(
    aws: dict[str, str], tmp_path: Path
) -> None:
    from citeq.store import Store

    Store(aws["ResultsTable"]).create_batch("b_x", 0, source=None, idempotency_key=None)
    for target in (tmp_path / "missing" / "out.jsonl", tmp_path):
        code, _, err = _run(["batch", "results", "b_x", "-o", str(target)], aws)
        assert code == EXIT_USAGE and err.startswith(f"citeq: invalid input: cannot write {target}")
        assert "Traceback" not in err


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_dlq_limits_must_be_positive_whole_numbers(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    for command in ("show", "redrive"):
        with pytest.raises(SystemExit) as exited:
            main(["dlq", command, "--limit", limit])
        assert exited.value.code == EXIT_USAGE and "--limit" in capsys.readouterr().err
