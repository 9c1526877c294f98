"""Assistant names before anything goes upstream, and the bounded host cache (issue 11), against a control
plane on 127.0.0.1 that counts its describe calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from citeq.client import MAX_CACHED_HOSTS, AssistantClient
from citeq.config import Settings
from citeq.errors import ValidationError
from tests.helpers import LoopbackServer


class ControlPlane(LoopbackServer):
    """Answers every describe-assistant call with a data host, and counts them."""

    def __init__(self) -> None:
        self.describes: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive answers without the delayed-ACK wait

            def do_GET(self) -> None:
                outer.describes.append(self.path)
                body = json.dumps({"name": self.path.rsplit("/", 1)[-1], "host": "http://127.0.0.1:9"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.serve(Handler)


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.close()


@pytest.fixture
def control(control_plane: ControlPlane) -> ControlPlane:
    control_plane.describes.clear()
    return control_plane


@pytest.mark.parametrize("name", ["..", "../admin", "a/b", "%2e%2e", "UPPER", "x" * 64, "ok\n", "-a", ""])
def test_names_outside_the_pattern_never_go_upstream(control: ControlPlane, name: str) -> None:
    client = AssistantClient(Settings.from_env({"PINECONE_API_KEY": "k", "CITEQ_PINECONE_HOST": control.url}))
    with pytest.raises(ValidationError, match="assistant name"):
        client.host_for(name)
    assert control.describes == []


def test_the_host_cache_is_bounded_and_keeps_the_newest(control: ControlPlane) -> None:
    client = AssistantClient(Settings.from_env({"PINECONE_API_KEY": "k", "CITEQ_PINECONE_HOST": control.url}))
    names = [f"a{n}" for n in range(MAX_CACHED_HOSTS + 10)]
    for name in names:
        client.host_for(name)
    assert len(control.describes) == len(names)
    client.host_for(names[-1])  # still cached: no new describe
    assert len(control.describes) == len(names)
    client.host_for(names[0])  # evicted long ago: described again
    assert len(control.describes) == len(names) + 1
