"""Errors of the emulated API; ``server.py`` renders each one as the service's error body.

EmulatorError (status, code)
├── InvalidArgument        400 INVALID_ARGUMENT
├── Unauthenticated        401 UNAUTHENTICATED
├── QuotaExceeded          403 QUOTA_EXCEEDED      (plan.py)
├── NotFound               404 NOT_FOUND
├── AlreadyExists          409 ALREADY_EXISTS
├── PayloadTooLarge        413 INVALID_ARGUMENT
├── TooManyRequests        429 TOO_MANY_REQUESTS   (plan.py; never a Retry-After)
└── InjectedError          any status, raised by fault injection
"""

from __future__ import annotations


class EmulatorError(Exception):
    """An API error with the HTTP status and the service's error code."""

    status = 500
    code = "UNKNOWN"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        """The service's error shape."""
        return {"error": {"code": self.code, "message": self.message}, "status": self.status}


class InvalidArgument(EmulatorError):
    """400: the request is malformed or not allowed."""

    status = 400
    code = "INVALID_ARGUMENT"


class Unauthenticated(EmulatorError):
    """401: missing or wrong API key."""

    status = 401
    code = "UNAUTHENTICATED"


class QuotaExceeded(EmulatorError):
    """403: the organization has used its plan's token quota (Pinecone's quota errors are 403 QUOTA_EXCEEDED)."""

    status = 403
    code = "QUOTA_EXCEEDED"


class NotFound(EmulatorError):
    """404: unknown assistant, file or operation."""

    status = 404
    code = "NOT_FOUND"


class AlreadyExists(EmulatorError):
    """409: an assistant of that name exists."""

    status = 409
    code = "ALREADY_EXISTS"


class PayloadTooLarge(EmulatorError):
    """413: the upload is larger than the service accepts for its type."""

    status = 413
    code = "INVALID_ARGUMENT"


class TooManyRequests(EmulatorError):
    """429: over the plan's chat input tokens per minute (the 2026-04 spec's ErrorResponse example code)."""

    status = 429
    code = "TOO_MANY_REQUESTS"


class InjectedError(EmulatorError):
    """An error chosen by fault injection."""

    CODES = {
        408: "DEADLINE_EXCEEDED",
        429: "TOO_MANY_REQUESTS",
        500: "UNKNOWN",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    MESSAGES = {
        429: "Too many requests, try again later",
        500: "Internal server error",
        503: "Service temporarily unavailable",
    }

    def __init__(self, status: int, *, retry_after: float | None = None) -> None:
        super().__init__(self.MESSAGES.get(status, f"Injected error {status}"), retry_after=retry_after)
        self.status = status
        self.code = self.CODES.get(status, "UNKNOWN")
