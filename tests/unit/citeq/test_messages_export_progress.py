from __future__ import annotations

import csv
import io
import json

import pytest

from citeq.errors import ValidationError
from citeq.export import to_string
from citeq.messages import decode
from citeq.models import BatchInfo, ChatRequest, RequestRecord
from citeq.progress import Progress

GOOD = {"v": 1, "request_id": "r1", "assistant": "a", "messages": [{"content": "q"}]}


def test_decode_valid_message_with_defaults() -> None:
    message = decode(json.dumps(GOOD))
    assert message.chat.messages[0].role == "user" and message.generation == 0 and message.dispatch is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("nope", "not JSON"),
        ("[1]", "JSON object"),
        (json.dumps({**GOOD, "v": 2}), "unsupported message version 2"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "v"}), "unsupported message version None"),
        (json.dumps({**GOOD, "messages": []}), "messages"),
        (json.dumps({**GOOD, "assistant": "Not Valid"}), "assistant"),
        (json.dumps({**GOOD, "surprise": 1}), "surprise"),
    ],
)
def test_decode_rejects_clearly(body: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        decode(body)


ANSWER = {
    "id": "x",
    "model": "gpt-4o",
    "finish_reason": "stop",
    "message": {"role": "assistant", "content": "A. B."},
    "citations": [
        {
            "position": 1,
            "references": [
                {
                    "file": {"name": "g.pdf", "id": None, "signed_url": "https://s/g", "url_expires_at": None},
                    "pages": [2, 3],
                }
            ],
        },
        {"position": 4, "references": [{"file": None, "pages": [], "missing_reference": 3}]},
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    "raw_content": "...",
}


def _items() -> list[RequestRecord]:
    return [
        RequestRecord(
            "r1",
            ChatRequest.ask("q1", "a"),
            custom_id="c1",
            status="succeeded",
            attempts=1,
            latency_ms=30,
            answer=ANSWER,
        ),
        RequestRecord(
            "r2",
            ChatRequest.ask("q2", "a"),
            status="failed",
            custom_id="c2",
            attempts=2,
            error={"type": "BadRequestError", "message": "bad model", "http_status": 400},
        ),
    ]


def test_jsonl_export_lines() -> None:
    lines = [json.loads(line) for line in to_string(_items(), "jsonl").splitlines()]
    assert [set(line) for line in lines] == [
        {"custom_id", "request_id", "status", "attempts", "latency_ms", "error", "answer"}
    ] * 2
    assert lines[0]["answer"] == ANSWER and lines[1]["error"]["http_status"] == 400


def test_csv_export_flattens_citations_readably() -> None:
    rows = list(csv.DictReader(io.StringIO(to_string(_items(), "csv"))))
    assert rows[0]["answer"] == "A. B."
    assert rows[0]["citations"] == "pos 1: [1] g.pdf (pp. 2, 3) | pos 4: [2] (missing reference 3)"
    assert rows[0]["references"] == "[1] g.pdf https://s/g | [2] (missing reference 3)"
    assert (rows[0]["prompt_tokens"], rows[1]["error_message"], rows[1]["http_status"]) == ("10", "bad model", "400")


def _info(counts: dict[str, int]) -> BatchInfo:
    return BatchInfo("b", sum(counts.values()), counts, "submitted", "2026-11-25T00:00:00Z", 0.0)


def test_progress_rate_eta_and_bar() -> None:
    view = Progress(_info({"queued": 50, "running": 10, "succeeded": 35, "failed": 5, "cancelled": 0}), 20.0)
    assert view.rate == 2.0 and view.eta == 30.0
    assert view.bar(10) == "[####......] 40/100 ok 35 failed 5 cancelled 0 | 2.0/s ETA 30s"
    assert (
        "ETA unknown"
        in Progress(_info({"queued": 3, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}), 5).summary()
    )


def test_a_request_too_large_for_one_sqs_message_is_refused_naming_where_it_came_from() -> None:
    from citeq.messages import MAX_BODY_BYTES, check_fits
    from citeq.models import ChatOptions, Message, Request

    def conversation(turns: int) -> Request:  # each turn within the per-message limit, the whole maybe not
        messages = tuple(Message("user" if n % 2 == 0 else "assistant", "x" * 190_000) for n in range(turns))
        return Request("r-1", ChatRequest("a", messages, ChatOptions()))

    check_fits(conversation(5))  # about 950 KB: fits, nothing raised
    assert MAX_BODY_BYTES < 6 * 190_000
    with pytest.raises(ValidationError, match=r"^line 7: the request is larger than one SQS message \(1048576 bytes\)"):
        check_fits(conversation(7), "line 7: the request")
