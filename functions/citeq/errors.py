"""Every error citeq raises. The worker decides retry-or-fail from ``retryable`` alone.

CiteqError
├── ConfigurationError            a required setting is missing or invalid (permanent)
├── ValidationError               a request, message or input line is invalid (permanent)
├── AssistantError                talking to the assistant went wrong
│   ├── TransportError            no usable HTTP response (retryable)
│   │   ├── ConnectionFailed      could not connect, or the connection dropped
│   │   ├── Timeout               connect or read timeout
│   │   └── StreamBroken          a stream ended mid-way; carries what was received
│   ├── DeadlineExceeded          the caller's deadline leaves no time for another attempt (retryable)
│   ├── MalformedResponse         a 200 whose body is JSON of the wrong shape (permanent)
│   │   └── TruncatedResponse     a 200 whose body is not JSON: cut off, e.g. by a proxy (retryable, not in-process)
│   └── APIStatusError            the assistant answered with an error status (status, code, message, request id)
│       ├── BadRequestError       400 (permanent)
│       ├── AuthenticationError   401 (permanent)
│       ├── PermissionDeniedError 403 (permanent)
│       ├── NotFoundError         404 (permanent)
│       ├── ConflictError         409 (retryable)
│       ├── RequestTimeoutError   408 (retryable)
│       ├── RateLimitError        429 (retryable; ``retry_after`` when the service sent one)
│       └── ServerError           5xx (retryable)
├── AWSError                      an AWS call failed (retryable unless stated; ``code`` is AWS's error code)
│   ├── StoreError                DynamoDB failures
│   │   └── ItemTooLarge          an answer that cannot fit an item even compressed (permanent)
│   └── QueueError                SQS failures
└── WebhookError                  webhook signature or payload problems (permanent)
"""

from __future__ import annotations


class CiteqError(Exception):
    """Base of every citeq error."""

    retryable = False

    def to_dict(self) -> dict[str, object]:
        """The error as stored on an item: type and message (and HTTP status where there is one)."""
        return {"type": type(self).__name__, "message": str(self), "http_status": None}


class ConfigurationError(CiteqError):
    """A setting is missing or invalid."""


class ValidationError(CiteqError):
    """Input is invalid; ``line`` is set for a numbered input line."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.reason = message
        self.line = line


class AssistantError(CiteqError):
    """A failure talking to the assistant."""


class TransportError(AssistantError):
    """No usable HTTP response."""

    retryable = True


class ConnectionFailed(TransportError):
    """Could not connect, or the connection dropped."""


class Timeout(TransportError):
    """A connect or read timeout."""


class StreamBroken(TransportError):
    """A stream ended before it was complete; ``received`` holds the content that did arrive."""

    def __init__(self, message: str, *, received: str = "", chunks: int = 0) -> None:
        super().__init__(message)
        self.received = received
        self.chunks = chunks


class DeadlineExceeded(AssistantError):
    """The caller's deadline does not leave enough time for (another) attempt."""

    retryable = True


class MalformedResponse(AssistantError):
    """The assistant answered 200 with JSON of a shape citeq cannot read (no ``choices``, no ``host``...).

    Permanent: the same call gets the same body (a changed API or a host that is not the assistant's), and
    every re-ask of a chat that answered 200 spends a whole answer's tokens again."""


class TruncatedResponse(MalformedResponse):
    """The assistant answered 200 but the body is not JSON: cut off on the way (proxies have been seen to do
    this) or replaced by an intermediary's page.

    Retryable, but never in-process (``retry.should_retry``): the service has already spent the answer's
    tokens, so the request goes back to the queue, where the worker's backoff, pacing and ``max_receives``
    bound what another try costs."""

    retryable = True


class APIStatusError(AssistantError):
    """The assistant answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"{status} {code or 'ERROR'}: {message}" + (f" (request id {request_id})" if request_id else "")
        )
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """As stored on an item, with the HTTP status and the service's code."""
        return {"type": type(self).__name__, "message": self.message, "http_status": self.status, "code": self.code}


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: unknown assistant or file, or the wrong region's host."""


class RequestTimeoutError(APIStatusError):
    """408."""

    retryable = True


class ConflictError(APIStatusError):
    """409."""

    retryable = True


class RateLimitError(APIStatusError):
    """429."""

    retryable = True


class ServerError(APIStatusError):
    """5xx."""

    retryable = True


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    429: RateLimitError,
}


def status_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """The error class for an HTTP status."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    return cls(message, status=status, code=code, request_id=request_id, retry_after=retry_after)


class AWSError(CiteqError):
    """An AWS call failed; retryable unless a subclass says otherwise. ``code`` is AWS's error code (or the
    botocore exception's name) when there is one."""

    retryable = True

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def credentials(self) -> bool:
        """Whether AWS refused who is calling (not what was sent): the one case to suggest checking credentials."""
        return self.code in CREDENTIAL_CODES


class StoreError(AWSError):
    """DynamoDB failed (the results table, the token budget)."""


class QueueError(AWSError):
    """SQS failed (sending, changing a message's visibility, reading the DLQ)."""


# AWS error codes (and botocore exception names) that mean the caller's identity or rights, not the request.
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccessDenied",
        "AccessDeniedException",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "NoCredentialsError",
        "PartialCredentialsError",
        "NoRegionError",
    }
)


class ItemTooLarge(StoreError):
    """An answer too large for a DynamoDB item even when compressed."""

    retryable = False


class WebhookError(CiteqError):
    """A webhook failed verification or carried an invalid payload."""
