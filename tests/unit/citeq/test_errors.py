from __future__ import annotations

import email.utils
import time

import pytest
import requests

from citeq.client import error_from_response
from citeq.errors import AuthenticationError, BadRequestError, NotFoundError, RateLimitError, ServerError


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    return response


@pytest.mark.parametrize(
    ("status", "body", "content_type", "cls", "code", "message"),
    [
        (
            400,
            b'{"error":{"code":"INVALID_ARGUMENT","message":"Message content cannot be empty"},"status":400}',
            "application/json",
            BadRequestError,
            "INVALID_ARGUMENT",
            "Message content cannot be empty",
        ),
        (
            401,
            b'{"error":{"code":"UNAUTHENTICATED","message":"Invalid API key."},"status":401}',
            "text/plain; charset=utf-8",
            AuthenticationError,
            "UNAUTHENTICATED",
            "Invalid API key.",
        ),
        (
            404,
            b'{"message":"Knowledge base not found"}',
            "application/json",
            NotFoundError,
            None,
            "Knowledge base not found",
        ),
        (429, b'{"detail":"slow down"}', "application/json", RateLimitError, None, "slow down"),
        (502, b"<html>Bad gateway</html>", "text/html", ServerError, None, "<html>Bad gateway</html>"),
        (503, b'{"error":"overloaded"}', "application/json", ServerError, None, "overloaded"),
    ],
    ids=["json", "json-as-text-plain", "message", "detail", "raw-text", "string-error"],
)
def test_error_bodies_in_every_form(
    status: int, body: bytes, content_type: str, cls: type, code: str | None, message: str
) -> None:
    error = error_from_response(_response(status, body, {"content-type": content_type, "x-pinecone-request-id": "r1"}))
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.request_id) == (status, code, message, "r1")


def test_retry_after_seconds_and_http_date() -> None:
    assert error_from_response(_response(429, b"{}", {"retry-after": "1.5"})).retry_after == 1.5
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    retry_after = error_from_response(_response(429, b"{}", {"retry-after": later})).retry_after
    assert retry_after is not None and 25 <= retry_after <= 30
    assert error_from_response(_response(429, b"{}", {"retry-after": "soon"})).retry_after is None


def test_error_dict_carries_http_status_and_code() -> None:
    error = error_from_response(_response(400, b'{"error":{"code":"INVALID_ARGUMENT","message":"bad"}}'))
    assert error.to_dict() == {
        "type": "BadRequestError",
        "message": "bad",
        "http_status": 400,
        "code": "INVALID_ARGUMENT",
    }
