"""The emulator is as strict as the service (issue 12), shown with the real ``pinecone`` and ``openai`` SDKs
(and raw HTTP where an SDK cannot send what a rule is about). Time is an injected clock: no sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from pinecone import Pinecone
from pinecone.errors import ApiError, NotFoundError

from infra.emulator import Backend, EmulatorServer
from infra.emulator.responses import METADATA_QUERY_ERROR
from tests.helpers import Clock, make_pdf

NAME = "rules"
PROCESSING = 30.0
V2026 = {"X-Pinecone-Api-Version": "2026-07"}
V2025 = {"X-Pinecone-Api-Version": "2025-10"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> Iterator[EmulatorServer]:
    """A fresh emulator whose uploads stay Processing for 30 (injected) seconds."""
    with EmulatorServer(Backend(clock=clock, processing_seconds=PROCESSING)) as emulator:
        yield emulator


@pytest.fixture
def pc(server: EmulatorServer) -> Pinecone:
    client = Pinecone(api_key=server.api_key, host=server.url)
    client.assistants.create(name=NAME)
    return client


@pytest.fixture
def manual(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "kettle-manual.pdf", [["Descale the Orbital kettle every month with citric acid."]])


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "kettle-notes.txt"
    path.write_text("The Orbital kettle notes say the kettle warranty lasts three years.")
    return path


def _openai(server: EmulatorServer, url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=server.api_key, base_url=f"{url or server.url}/assistant/chat/{NAME}", max_retries=0)


def _ask(client: openai.OpenAI, question: str, **extra: object) -> str:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": question}],
        extra_body=extra or None,
    )
    return completion.choices[0].message.content or ""


def _raw(
    server: EmulatorServer, method: str, path: str, headers: dict[str, str], **kwargs: object
) -> requests.Response:
    return requests.request(
        method, server.url + path, headers={"Api-Key": server.api_key, **headers}, timeout=10, **kwargs
    )


def _error(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"] == message


# --------------------------------------------------------------------------- files take time
def test_upload_is_processing_and_chat_before_any_file_is_ready_gets_the_services_400(
    pc: Pinecone, server: EmulatorServer, clock: Clock, manual: Path
) -> None:
    uploaded = pc.assistants.upload_file(assistant_name=NAME, file_path=str(manual), timeout=-1)
    assert uploaded.status == "Processing"
    with pytest.raises(ApiError) as sdk_error:
        pc.assistants.chat_completions(assistant_name=NAME, messages=[{"content": "How do I descale it?"}])
    assert sdk_error.value.status_code == 400 and "Assistant doesn't contain any files" in str(sdk_error.value)
    with pytest.raises(openai.BadRequestError, match="Assistant doesn't contain any files"):
        _ask(_openai(server), "How do I descale it?")
    [operation] = pc.assistants.list_operations(assistant_name=NAME, status="Processing")
    assert (operation.operation_type, operation.file_id) == ("upload_file", uploaded.id)

    clock.now += PROCESSING
    assert pc.assistants.describe_file(assistant_name=NAME, file_id=uploaded.id).status == "Available"
    assert pc.assistants.describe_operation(assistant_name=NAME, operation_id=operation.operation_id).status == (
        "Completed"
    )
    assert "Descale the Orbital kettle every month" in _ask(_openai(server), "How do I descale it?")


# --------------------------------------------------------------------------- file API, 2026-04 and later
def test_upload_metadata_only_as_a_multipart_field_from_2026_04(server: EmulatorServer, pc: Pinecone) -> None:
    files = {"file": ("a.txt", b"Some text about kettles.")}
    query = {"metadata": json.dumps({"kind": "notes"})}
    with_query = _raw(server, "POST", f"/assistant/files/{NAME}", V2026, files=files, params=query)
    _error(with_query, 400, METADATA_QUERY_ERROR)
    extra = {**files, "multimodal": (None, b"true")}
    refused = _raw(server, "POST", f"/assistant/files/{NAME}", V2026, files=extra)
    _error(refused, 400, "Unexpected multipart field 'multimodal': only 'file' and 'metadata' are accepted")
    # 2025-10 still takes the query parameter and answers 200 with the file.
    older = _raw(server, "POST", f"/assistant/files/{NAME}", V2025, files=files, params=query)
    assert older.status_code == 200 and older.json()["metadata"] == {"kind": "notes"}


def test_upload_answers_202_with_a_location_that_resolves_and_typed_operations(
    server: EmulatorServer, pc: Pinecone, clock: Clock, notes: Path
) -> None:
    accepted = _raw(server, "POST", f"/assistant/files/{NAME}", V2026, files={"file": ("n.txt", b"Kettles boil.")})
    assert accepted.status_code == 202
    location = accepted.headers["Location"]
    assert location == f"/assistant/operations/{NAME}/{accepted.json()['id']}"
    assert _raw(server, "GET", location, V2026).json()["operation_type"] == "upload_file"
    clock.now += PROCESSING
    upserted = pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), file_id="my-notes", timeout=-1)
    assert upserted.id == "my-notes"
    types = [op.operation_type for op in pc.assistants.list_operations(assistant_name=NAME)]
    assert types == ["upload_file", "upsert_file"]
    assert [op.file_id for op in pc.assistants.list_operations(assistant_name=NAME, operation_type="upsert_file")] == [
        "my-notes"
    ]


def test_file_object_from_2026_04_has_no_removed_fields(server: EmulatorServer, pc: Pinecone, notes: Path) -> None:
    file = pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), timeout=-1)
    newer = _raw(server, "GET", f"/assistant/files/{NAME}/{file.id}", V2026).json()
    older = _raw(server, "GET", f"/assistant/files/{NAME}/{file.id}", V2025).json()
    assert "percent_done" not in newer and "error_message" not in newer and newer["size"] == file.size
    assert older["percent_done"] == 0.5 and "error_message" in older


def test_delete_goes_through_deleting_then_404_and_a_repeat_or_failed_file_is_204(
    server: EmulatorServer, pc: Pinecone, clock: Clock, manual: Path, notes: Path, tmp_path: Path
) -> None:
    kept = pc.assistants.upload_file(assistant_name=NAME, file_path=str(manual), timeout=-1)
    doomed = pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), timeout=-1)
    clock.now += PROCESSING
    pc.assistants.delete_file(assistant_name=NAME, file_id=doomed.id, timeout=-1)
    assert pc.assistants.describe_file(assistant_name=NAME, file_id=doomed.id).status == "Deleting"
    assert "warranty" not in _ask(_openai(server), "How long is the kettle warranty?")  # no longer searched
    again = _raw(server, "DELETE", f"/assistant/files/{NAME}/{doomed.id}", V2026)
    assert (again.status_code, again.content) == (204, b"")
    with pytest.raises(NotFoundError):
        pc.assistants.describe_file(assistant_name=NAME, file_id=doomed.id)

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"not a pdf at all")
    failed = pc.assistants.upload_file(assistant_name=NAME, file_path=str(broken), timeout=-1)
    clock.now += PROCESSING
    assert pc.assistants.describe_file(assistant_name=NAME, file_id=failed.id).status == "ProcessingFailed"
    assert _raw(server, "DELETE", f"/assistant/files/{NAME}/{failed.id}", V2026).status_code == 204
    pc.assistants.delete_file(assistant_name=NAME, file_id=kept.id, timeout=-1)
    clock.now += PROCESSING
    with pytest.raises(NotFoundError):
        pc.assistants.describe_file(assistant_name=NAME, file_id=kept.id)
    assert [op.status for op in pc.assistants.list_operations(assistant_name=NAME, operation_type="delete_file")] == [
        "Completed",
        "Completed",
    ]


def test_operations_routes_are_404_before_2026_04_and_filters_are_sealed(server: EmulatorServer, pc: Pinecone) -> None:
    assert _raw(server, "GET", f"/assistant/operations/{NAME}", V2025).status_code == 404
    assert _raw(server, "GET", f"/assistant/operations/{NAME}", {}).status_code == 404
    for query in ({"status": "Succeeded"}, {"operation_type": "file_upload"}, {"limit": "101"}, {"limit": "0"}):
        assert _raw(server, "GET", f"/assistant/operations/{NAME}", V2026, params=query).status_code == 400
    with pytest.raises(NotFoundError, match=r"Operation nope not found\."):
        pc.assistants.describe_operation(assistant_name=NAME, operation_id="nope")


def test_listings_paginate_with_opaque_tokens(server: EmulatorServer, pc: Pinecone) -> None:
    for number in range(3):
        _raw(server, "POST", f"/assistant/files/{NAME}", V2026, files={"file": (f"f{number}.txt", b"Kettles.")})
    first = pc.assistants.list_operations_page(assistant_name=NAME, page_size=2)
    assert len(first.operations) == 2 and first.next is not None and not first.next.isdigit()
    rest = pc.assistants.list_operations_page(assistant_name=NAME, page_size=2, pagination_token=first.next)
    assert len(rest.operations) == 1 and rest.next is None
    assert len(list(pc.assistants.list_files(assistant_name=NAME))) == 3
    bad = _raw(server, "GET", f"/assistant/files/{NAME}", V2026, params={"pagination_token": "garbage"})
    _error(bad, 400, "Invalid pagination token")


# --------------------------------------------------------------------------- filters
def test_not_filter_is_accepted_and_invalid_filters_are_errors(
    server: EmulatorServer, pc: Pinecone, clock: Clock, manual: Path, notes: Path
) -> None:
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(manual), metadata={"kind": "manual"}, timeout=-1)
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), metadata={"kind": "notes"}, timeout=-1)
    clock.now += PROCESSING
    not_manual = {"kind": {"$not": {"$eq": "manual"}}}
    assert [f.name for f in pc.assistants.list_files(assistant_name=NAME, filter=not_manual)] == ["kettle-notes.txt"]
    answer = pc.assistants.chat_completions(
        assistant_name=NAME, messages=[{"content": "Kettle descale warranty?"}], filter=not_manual
    )
    content = answer.choices[0].message.content or ""
    assert "kettle-notes.txt" in content and "kettle-manual.pdf" not in content
    for invalid in ({"kind": ["manual", "notes"]}, {"kind": {"$eq": ["manual"]}}):
        with pytest.raises(ApiError) as info:
            pc.assistants.chat_completions(assistant_name=NAME, messages=[{"content": "Kettle?"}], filter=invalid)
        assert info.value.status_code == 400
        with pytest.raises(openai.BadRequestError):
            _ask(_openai(server), "Kettle?", filter=invalid)


# --------------------------------------------------------------------------- models and roles
def test_model_outside_the_enum_gets_the_backends_message(
    server: EmulatorServer, pc: Pinecone, clock: Clock, notes: Path
) -> None:
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), timeout=-1)
    clock.now += PROCESSING
    with pytest.raises(ApiError) as info:  # the SDK sends 2026-07
        pc.assistants.chat(assistant_name=NAME, messages=[{"content": "Warranty?"}], model="claude-3-5-sonnet")
    assert info.value.message == (
        "Invalid model `claude-3-5-sonnet`. Expected one of: gpt-4o, gpt-4.1, o4-mini, gpt-5, claude-sonnet-4-5, "
        "gemini-2.5-pro."
    )
    assert pc.assistants.chat(assistant_name=NAME, messages=[{"content": "Warranty?"}], model="gpt-5").message
    with pytest.raises(openai.BadRequestError, match=r"Invalid model `gpt-4\.1`"):  # no version header: 2025-01
        _openai(server).chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Warranty?"}])


def test_roles_are_user_and_assistant_only(server: EmulatorServer, pc: Pinecone, clock: Clock, notes: Path) -> None:
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), timeout=-1)
    clock.now += PROCESSING
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert pc.assistants.chat_completions(assistant_name=NAME, messages=[*history, {"content": "Warranty?"}])
    with pytest.raises(ApiError, match="Role 'system' is not valid"):
        pc.assistants.chat_completions(
            assistant_name=NAME, messages=[{"role": "system", "content": "Be brief."}, {"content": "Warranty?"}]
        )
    with pytest.raises(openai.BadRequestError, match="Role 'system' is not valid"):
        _openai(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        )


# --------------------------------------------------------------------------- control plane
def test_empty_update_is_400(server: EmulatorServer, pc: Pinecone) -> None:
    _error(_raw(server, "PATCH", f"/assistant/assistants/{NAME}", V2026, json={}), 400, "No updates provided")
    assert pc.assistants.update(name=NAME, instructions="").instructions == ""


def test_assistant_list_paginates_from_2026_04(server: EmulatorServer, pc: Pinecone) -> None:
    for number in range(3):
        pc.assistants.create(name=f"{NAME}-{number}")
    page = pc.assistants.list_page(page_size=3)
    assert len(page.assistants) == 3 and page.next is not None
    assert [a.name for a in pc.assistants.list()] == [NAME, f"{NAME}-0", f"{NAME}-1", f"{NAME}-2"]
    assert len(_raw(server, "GET", "/assistant/assistants", V2025).json()["assistants"]) == 4


def test_eu_assistant_is_served_at_its_own_host_and_the_wrong_host_is_404(
    server: EmulatorServer, pc: Pinecone, clock: Clock, notes: Path
) -> None:
    eu = pc.assistants.create(name="rules-eu", region="eu")
    assert eu.host == server.eu_url != server.url
    pc.assistants.upload_file(assistant_name="rules-eu", file_path=str(notes), timeout=-1)
    clock.now += PROCESSING
    assert pc.assistants.chat_completions(assistant_name="rules-eu", messages=[{"content": "Warranty?"}])
    wrong = openai.OpenAI(api_key=server.api_key, base_url=f"{server.url}/assistant/chat/rules-eu", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="Knowledge base not found"):
        wrong.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Warranty?"}])
    with pytest.raises(openai.NotFoundError, match="Knowledge base not found"):
        _ask(_openai(server, server.eu_url), "How do I descale it?")  # a us assistant at the eu host
