"""Inbound webhooks behind a function URL (AuthType NONE, buffered): verify, dedupe, enqueue, 202.

``POST /v1/webhooks`` with Standard Webhooks headers and a JSON body holding a question (or messages), an
optional assistant/model/temperature/filter/metadata/custom_id, and the ``callback_url`` where the answer goes.
A repeated ``webhook-id`` is the same request: same request id, nothing enqueued twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import socket
import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from citeq import intake
from citeq.config import Settings
from citeq.errors import ConfigurationError, ValidationError, WebhookError
from citeq.store import Store
from citeq.text import loads
from citeq.webhooks import verify_sender

logger = Logger(service="citeq-webhook")
settings = Settings.from_env()
settings.require("table")
MAX_BODY_BYTES = 256 * 1024
store = Store(settings.table or "", ttl_days=settings.result_ttl_days)
app = LambdaFunctionUrlResolver()


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


@app.post("/v1/webhooks")
def receive() -> Response[str]:
    """Verify the signature, then enqueue the request (or find the one this webhook id made before)."""
    event = app.current_event
    raw = event.body or ""
    try:
        body = base64.b64decode(raw, validate=True) if event.is_base64_encoded else raw.encode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return _json(400, {"error": "body is not valid base64"})
    if len(body) > MAX_BODY_BYTES:
        return _json(413, {"error": f"body is larger than {MAX_BODY_BYTES} bytes"})
    try:
        # Read per request: Powertools caches a Secrets Manager secret for 5 minutes, so rotations arrive. Each
        # is checked on load: a malformed one is the operator's error (503), never the sender's (issue 11).
        senders = [(name, secret.get()) for name, secret in settings.resolve_webhook_senders()]
    except ConfigurationError as exc:
        logger.error("webhook secrets unusable: %s", exc)
        return _json(503, {"error": "webhook secrets are not available"})
    try:
        sender, webhook_id = verify_sender(senders, event.headers, body, now=time.time())
    except WebhookError as exc:
        logger.info("webhook rejected: %s", exc)
        return _json(401, {"error": str(exc)})
    caller = f"webhook:{sender}"
    try:
        payload = loads(body, what="the body")
        request_id = "wh_" + hashlib.sha256(f"{caller}\n{webhook_id}".encode()).hexdigest()[:24]
        accepted = intake.enqueue(
            payload,
            store=store,
            default_assistant=settings.assistant,
            request_id=request_id,
            require_callback=True,
            caller=caller,
            callback_allow_hosts=settings.callback_allow_hosts,
            # A callback host resolving to an internal address is a 400 now, not a dropped delivery later.
            callback_resolve=socket.getaddrinfo,
        )
    except ValidationError as exc:
        return _json(400, {"error": str(exc)})
    logger.info("webhook accepted", extra={"request_id": accepted.request_id, "duplicate": accepted.duplicate})
    return _json(202, {"request_id": accepted.request_id, "status": "queued", "duplicate": accepted.duplicate})


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Function URL event (payload v2.0) in, HTTP response out."""
    return app.resolve(event, context)
