"""The one request model (issue 13): one validator for every entrance, one queue codec, one JSON builder."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from citeq import batch, intake
from citeq.client import answer_from_chat
from citeq.errors import MalformedResponse, ValidationError
from citeq.messages import decode, encode
from citeq.models import OPTIONS, ChatOptions, ChatRequest, Request, RequestRecord

LINE: dict[str, Any] = {
    "custom_id": "q-1",
    "question": "What is covered?",
    "model": "gpt-4o",
    "temperature": 0.2,
    "filter": {"kind": "manual"},
    "context_options": {"top_k": 4, "snippet_size": 1024},
    "metadata": {"team": "ops"},
    "callback_url": "https://hooks.example.com/cb",
}


def test_every_entrance_reads_the_same_request_from_the_same_fields() -> None:
    from_batch = batch.parse(json.dumps(LINE), fmt="jsonl", default_assistant="main").items[0].request
    from_http = intake.validate(LINE, "main")
    assert from_batch == from_http
    assert from_http.chat.options == ChatOptions("gpt-4o", 0.2, {"kind": "manual"}, {"top_k": 4, "snippet_size": 1024})
    assert (from_http.custom_id, from_http.metadata) == ("q-1", {"team": "ops"})
    assert from_http.callback_url == LINE["callback_url"]


def test_a_csv_column_per_option_is_read_as_its_kind() -> None:
    text = 'custom_id,question,temperature,context_options,team\nq-1,Why?,0.5,"{""top_k"": 2}",ops\n'
    [line] = batch.parse(text, fmt="csv", default_assistant="main").items
    assert line.request.chat.options == ChatOptions(temperature=0.5, context_options={"top_k": 2})
    assert line.request.metadata == {"team": "ops"}


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"context_options": {"top_k": 0}}, "top_k must be an integer from 1 to 64"),
        ({"context_options": {"top_k": 65}}, "top_k must be an integer from 1 to 64"),
        ({"context_options": {"top_k": True}}, "top_k must be an integer"),
        ({"context_options": {"snippet_size": 511}}, "snippet_size must be an integer from 512 to 8192"),
        ({"context_options": {"multimodal": "yes"}}, "multimodal must be true or false"),
        ({"context_options": {"depth": 3}}, "unknown field 'depth'"),
        ({"context_options": {}}, "context_options must be a JSON object"),
        ({"context_options": [4]}, "context_options must be a JSON object"),
        ({"model": ""}, "model must be a non-empty string"),
        ({"temperature": "hot"}, "temperature must be a number"),
    ],
)
def test_each_bad_option_is_refused_with_its_reason_at_every_entrance(options: dict[str, Any], reason: str) -> None:
    line = {"custom_id": "x", "question": "q", **options}
    [error] = batch.parse(json.dumps(line), fmt="jsonl", default_assistant="main").errors
    assert reason in error.reason
    with pytest.raises(ValidationError, match=reason):
        intake.validate(line, "main")
    with pytest.raises(ValidationError, match=reason):
        ChatRequest.parse({"question": "q", **options}, default_assistant="main")


def test_the_system_role_is_refused_everywhere_with_the_same_words() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]
    expected = "message role must be user or assistant, got 'system'"
    with pytest.raises(ValidationError, match=expected):
        ChatRequest.parse({"messages": messages}, default_assistant="main")
    line = json.dumps({"custom_id": "x", "messages": messages})
    [error] = batch.parse(line, fmt="jsonl", default_assistant="m").errors
    assert expected in error.reason
    body = {"v": 1, "request_id": "r", "assistant": "a", "messages": messages}
    with pytest.raises(ValidationError, match=expected):
        decode(json.dumps(body))


def test_the_queue_body_round_trips_the_whole_request() -> None:
    request = replace(intake.validate(LINE, "main"), request_id="r-1", batch_id="b", seq=3, caller="key:0123")
    record = RequestRecord(**{**request.__dict__, "generation": 2, "dispatch": "tok"})
    decoded = decode(encode(record))
    # metadata is stored with the request, not sent on the queue
    assert decoded == replace(record, metadata=None)
    assert json.loads(encode(request))["options"]["context_options"] == {"top_k": 4, "snippet_size": 1024}


# A body as the pydantic RequestMessage wrote it before issue 13 (model_dump_json(exclude_none=True)): every
# option of the time, a callback object, generation always present, no caller.
OLD_BODY = (
    '{"v":1,"request_id":"b_1-000001","batch_id":"b_1","custom_id":"q-1","seq":1,"assistant":"main",'
    '"messages":[{"role":"user","content":"Why?"},{"role":"assistant","content":"Because."},'
    '{"role":"user","content":"Why not?"}],"options":{"model":"gpt-4o","temperature":0.2,"filter":{"k":"v"}},'
    '"callback":{"url":"https://hooks.example.com/cb"},"generation":0,"dispatch":"0123456789abcdef"}'
)


def test_a_v1_body_written_before_the_one_model_decodes_and_encodes_back_byte_for_byte() -> None:
    record = decode(OLD_BODY)
    assert record.chat.options == ChatOptions("gpt-4o", 0.2, {"k": "v"})
    assert (record.callback_url, record.caller, record.generation) == ("https://hooks.example.com/cb", None, 0)
    assert record.question == "Why not?" and record.chat.endpoint == "/chat/completions"
    assert encode(record) == OLD_BODY


def test_the_body_builder_and_endpoint_follow_the_options() -> None:
    plain = ChatRequest.ask("q", "main", model="gpt-4.1")
    assert plain.endpoint == "/chat/completions"
    expected = {"messages": [{"role": "user", "content": "q"}], "stream": True, "model": "gpt-4.1"}
    assert plain.body(stream=True) == expected
    scoped = ChatRequest.ask("q", "main", context_options={"top_k": 2})
    # Only the standard chat takes context_options (shared/reference §2): such a request goes there.
    assert scoped.endpoint == ""
    assert scoped.body(stream=False)["context_options"] == {"top_k": 2}
    assert {name for name, option in OPTIONS.items() if option.standard_only} == {"context_options"}


def test_a_standard_chat_answer_becomes_the_same_answer_object() -> None:
    payload = {
        "id": "1",
        "model": "gpt-4o-2024-11-20",
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": "The CFO is Spencer Neumann."},
        "usage": {"prompt_tokens": 9736, "completion_tokens": 8, "total_tokens": 9744},
        "citations": [
            {
                "position": 27,
                "references": [
                    {"file": {"name": "10k.pdf", "id": "f1", "signed_url": "https://s/10k"}, "pages": [78, 79]}
                ],
            }
        ],
    }
    answer = answer_from_chat(payload)
    assert answer.content == "The CFO is Spencer Neumann." and answer.usage and answer.usage["prompt_tokens"] == 9736
    [citation] = answer.citations
    assert citation.position == 27 and citation.references[0].pages == (78, 79)
    assert citation.references[0].file is not None and citation.references[0].file.name == "10k.pdf"
    assert answer.to_dict()["citations"][0]["references"][0]["file"]["signed_url"] == "https://s/10k"


def _chat_answer(content: object = "The CFO is Spencer Neumann.", **citation: object) -> dict[str, Any]:
    reference = {"file": {"name": citation.pop("name", "10k.pdf")}, "pages": citation.pop("pages", [78])}
    return {
        "id": "1",
        "model": "m",
        "message": {"role": "assistant", "content": content},
        "citations": [{"position": 27, "references": [reference], **citation}],
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_chat_answer(5), "message.content is int, not str"),
        (_chat_answer(["The CFO"]), "message.content is list, not str"),
        (_chat_answer(position=28), "position 28 is outside the content (27 characters)"),
        (_chat_answer(position=-1), "position -1 is outside the content"),
        (_chat_answer(position=True), "position is bool, not int"),
        (_chat_answer(position=1.7), "position is float, not int"),
        (_chat_answer(pages=[78.5]), "pages is float, not int"),
        (_chat_answer(name=None), "file.name is NoneType, not str"),
    ],
)
def test_a_standard_chat_answer_of_the_wrong_types_is_malformed_not_coerced(
    payload: dict[str, Any], reason: str
) -> None:
    # Before: a content of 5 was stored as the answer's text, int(1.7) and str(None) made up a position and a
    # file name, and a position past the content was kept; the completion endpoint's reader refuses the same.
    with pytest.raises(MalformedResponse, match=re.escape(reason)):
        answer_from_chat(payload)


def test_a_standard_chat_answer_citing_the_end_of_its_content_is_read() -> None:
    [citation] = answer_from_chat(_chat_answer()).citations
    assert citation.position == 27 and citation.references[0].pages == (78,)


def test_a_request_without_an_id_is_named_when_stored() -> None:
    class Store:
        stored: list[Request] = []

        def put_request(self, request: Request) -> bool:
            self.stored.append(request)
            return True

    store = Store()
    accepted = intake.store_request(intake.validate({"question": "q"}, "main"), store=store, caller="key:1")  # type: ignore[arg-type]
    assert accepted.request_id.startswith("r_") and store.stored[0].request_id == accepted.request_id
    assert store.stored[0].caller == "key:1"


def test_exporters_and_progress_read_records_without_the_dynamodb_module() -> None:
    import subprocess
    import sys

    code = "import sys, citeq.export, citeq.progress; print('citeq.store' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_question_is_measured_in_the_utf8_bytes_it_travels_and_is_stored_in() -> None:
    # 60,000 CJK characters are 180,000 bytes of UTF-8 (refused before as "360,033 bytes", counted \u-escaped).
    [message] = ChatRequest.ask("漢" * 60_000, "main").messages
    assert len(message.content.encode()) == 180_000
    with pytest.raises(ValidationError, match=r"^question is 200,0\d\d bytes; the limit is 200,000"):
        ChatRequest.ask("漢" * 66_667, "main")
