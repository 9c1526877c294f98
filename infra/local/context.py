"""A Lambda context object for handlers invoked locally."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class LambdaContext:
    """The attributes and method Lambda's Python context offers (those Powertools reads)."""

    function_name: str = "citeq-local-worker"
    timeout_seconds: float = 120.0
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/citeq-local-worker"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        """A well-formed ARN for the local function."""
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until this invocation's timeout."""
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))
