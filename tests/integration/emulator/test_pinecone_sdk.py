"""The official pinecone SDK, configured only through its public settings, against the emulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pinecone import Pinecone
from pinecone.errors import ApiError, NotFoundError

from infra.emulator import EmulatorServer
from tests.helpers import make_pdf

NAME = "sdk-suite"


@pytest.fixture
def pc(emulator: EmulatorServer) -> Iterator[Pinecone]:
    client = Pinecone(api_key=emulator.api_key, host=emulator.url)
    yield client
    if NAME in [a.name for a in client.assistants.list()]:
        client.assistants.delete(name=NAME, timeout=-1)


@pytest.fixture
def guide(tmp_path: Path) -> Path:
    return make_pdf(
        tmp_path / "orbital-manual.pdf",
        [
            ["The Orbital kettle boils one litre of water in ninety seconds."],
            ["Descale the Orbital kettle every month with citric acid when the water is hard."],
            ["The Orbital warranty lasts three years and covers the heating element."],
        ],
    )


def test_sdk_assistant_lifecycle_create_describe_list_update_delete(pc: Pinecone, emulator: EmulatorServer) -> None:
    created = pc.assistants.create(name=NAME, instructions="Answer briefly.", metadata={"team": "qa"})
    assert created.status == "Ready"
    described = pc.assistants.describe(name=NAME)
    assert described.host == emulator.url
    assert described.instructions == "Answer briefly."
    assert NAME in [a.name for a in pc.assistants.list()]
    updated = pc.assistants.update(name=NAME, instructions="Answer in detail.")
    assert updated.instructions == "Answer in detail."
    pc.assistants.delete(name=NAME, timeout=-1)
    with pytest.raises(NotFoundError):
        pc.assistants.describe(name=NAME)


def test_sdk_files_upload_waits_available_lists_with_filter_and_describes_url(
    pc: Pinecone, guide: Path, tmp_path: Path
) -> None:
    pc.assistants.create(name=NAME)
    notes = tmp_path / "notes.txt"
    notes.write_text("Team lunch is on Fridays.")
    pdf = pc.assistants.upload_file(assistant_name=NAME, file_path=str(guide), metadata={"kind": "manual"})
    txt = pc.assistants.upload_file(assistant_name=NAME, file_path=str(notes), metadata={"kind": "notes"})
    assert pdf.status == "Available"
    assert txt.status == "Available"
    manuals = list(pc.assistants.list_files(assistant_name=NAME, filter={"kind": {"$eq": "manual"}}))
    assert [f.name for f in manuals] == ["orbital-manual.pdf"]
    described = pc.assistants.describe_file(assistant_name=NAME, file_id=pdf.id, include_url=True)
    assert described.signed_url is not None
    assert "X-Goog-Expires=3600" in described.signed_url
    assert re.search(r"X-Goog-Date=\d{8}T\d{6}Z", described.signed_url)
    assert pc.assistants.describe_file(assistant_name=NAME, file_id=pdf.id).signed_url is None
    pc.assistants.delete_file(assistant_name=NAME, file_id=txt.id, timeout=-1)
    with pytest.raises(NotFoundError):
        pc.assistants.describe_file(assistant_name=NAME, file_id=txt.id)


def test_sdk_chat_before_any_file_gets_service_400(pc: Pinecone) -> None:
    pc.assistants.create(name=NAME)
    with pytest.raises(ApiError) as info:
        pc.assistants.chat_completions(assistant_name=NAME, messages=[{"content": "hello?"}])
    assert info.value.status_code == 400
    assert "doesn't contain any files" in str(info.value)


def test_sdk_chat_completions_default_and_stream_cite_the_right_pdf_page(pc: Pinecone, guide: Path) -> None:
    pc.assistants.create(name=NAME)
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(guide))
    question = [{"role": "user", "content": "How often should I descale the kettle?"}]
    response = pc.assistants.chat_completions(assistant_name=NAME, messages=question)
    content = response.choices[0].message.content or ""
    assert "Descale the Orbital kettle every month" in content
    assert "[1, pp. 2]" in content
    assert "\n\nReferences:\n1. [orbital-manual.pdf](https://" in content
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    streamed = "".join(pc.assistants.chat_completions(assistant_name=NAME, messages=question, stream=True).text())
    # The stream carries the same words and markers; only the signed URLs' signatures are per response.
    assert streamed.split("References:")[0] == content.split("References:")[0]


def test_sdk_standard_chat_default_and_stream_positions_point_at_cited_sentence(pc: Pinecone, guide: Path) -> None:
    pc.assistants.create(name=NAME)
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(guide))
    question = [{"content": "How long is the warranty?"}]
    response = pc.assistants.chat(assistant_name=NAME, messages=question, include_highlights=True)
    first = response.citations[0]
    assert response.message.content[: first.position + 1].endswith("covers the heating element.")
    assert first.references[0].pages == [3]
    assert first.references[0].file.name == "orbital-manual.pdf"
    assert first.references[0].highlight is not None
    chunks = list(pc.assistants.chat(assistant_name=NAME, messages=question, stream=True))
    kinds = [type(c).__name__ for c in chunks]
    assert kinds[0] == "StreamMessageStart"
    assert kinds[-1] == "StreamMessageEnd"
    assert "StreamCitationChunk" in kinds
    text = "".join(c.delta.content for c in chunks if type(c).__name__ == "StreamContentChunk")
    assert text == response.message.content


def test_sdk_context_returns_scored_snippets_with_pages(pc: Pinecone, guide: Path) -> None:
    pc.assistants.create(name=NAME)
    pc.assistants.upload_file(assistant_name=NAME, file_path=str(guide))
    context = pc.assistants.context(assistant_name=NAME, query="warranty heating element", top_k=2)
    assert context.snippets
    best = context.snippets[0]
    assert "warranty" in best.content
    assert best.reference.pages == [3]
    assert 0 < best.score <= 1
    assert context.usage.completion_tokens == 0
