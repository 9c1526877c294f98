"""Regenerate samples/docs/lumen-api-guide.pdf, the demo's multi-page PDF (needs fpdf2: ``pip install fpdf2``)."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

PAGES = [
    (
        "Lumen API Guide - Authentication",
        [
            "The Lumen v2 API is served from https://api.lumen.example/v2 and accepts only TLS 1.2 or newer.",
            "Every request must carry an API key in the Authorization header as a bearer token.",
            "API keys are created in the workspace settings by an administrator and can be scoped to read-only access.",
            "A key that has not been used for 180 days is disabled automatically, and its owner is emailed a week before.",
            "Keys must never be embedded in browser code; use short-lived session tokens for front-end clients instead.",
        ],
    ),
    (
        "Lumen API Guide - Rate limits",
        [
            "Rate limits are applied per workspace, not per key, over a sliding window of one minute.",
            "The Starter plan allows 100 requests per minute, the Growth plan 600 and the Enterprise plan 6000.",
            "A request over the limit receives HTTP 429 with a Retry-After header that gives the number of seconds to wait.",
            "Clients should retry 429 and 503 responses with exponential backoff and full jitter, starting at one second.",
            "Bulk exports do not count against the rate limit because they run as asynchronous jobs.",
        ],
    ),
    (
        "Lumen API Guide - Pagination and exports",
        [
            "List endpoints return at most 200 items per page and include a next_cursor field when more items exist.",
            "Cursors expire after 24 hours, so a paused crawl must start again from the first page after that.",
            "Bulk exports are created with POST /v2/exports and delivered as gzip-compressed JSON Lines files.",
            "An export link stays valid for seven days and can be downloaded at most ten times.",
        ],
    ),
    (
        "Lumen API Guide - Webhooks and errors",
        [
            "Webhooks are signed with HMAC-SHA256 using the endpoint's signing secret, and the signature travels in the Lumen-Signature header.",
            "Receivers must reject deliveries whose timestamp is more than five minutes old to prevent replay attacks.",
            "A delivery that does not receive a 2xx response within ten seconds is retried with exponential backoff for up to 24 hours.",
            "Errors use a JSON body with a machine-readable code, a human-readable message and the request identifier.",
            "Support can trace any failed call when customers quote the request identifier from the X-Request-Id header.",
        ],
    ),
]


def build(target: Path) -> None:
    """Write the four-page guide to ``target``."""
    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=20)
    for title, paragraphs in PAGES:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 10, title + ".")
        pdf.ln(4)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(3)
    pdf.output(str(target))


if __name__ == "__main__":
    build(Path(__file__).parent / "docs" / "lumen-api-guide.pdf")
