"""moto's server in its own process (``python -m infra.local.moto_process``), with DynamoDB made atomic.

Running "AWS" in another process keeps its CPU off the worker's interpreter (one GIL each), as in AWS.
Prints the server's URL on the first line of stdout, then serves until terminated.

moto's own server (werkzeug's development server) closes the connection after every response, so each call
costs a new TCP connection and a new thread on both sides; waitress keeps connections open (HTTP/1.1
keep-alive, as AWS endpoints do) and serves them from a fixed pool of threads.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
from typing import Any

from infra.lifetime import exit_with_parent
from infra.local.atomic import make_dynamodb_atomic
from infra.local.quick_sqs import make_sqs_quick
from infra.local.quick_streams import make_streams_trim

# JSON-protocol calls name their service in X-Amz-Target; these go straight to that service's app.
_TARGET_PREFIXES = {
    "DynamoDB_20120810.": "dynamodb",
    "DynamoDBStreams_20120810.": "dynamodbstreams",
    "AmazonSQS.": "sqs",
}


class Dispatcher:
    """moto's dispatcher, with a shortcut for the calls the local stack makes thousands of times.

    moto finds each request's service by matching its host against every service's URL patterns and then
    inspecting the request (~10% of the server's CPU per call); a DynamoDB or SQS JSON call says which
    service it is in one header, so those skip the search. Everything else goes through moto's own lookup.
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.moto = DomainDispatcherApplication(create_backend_app)
        self.create_app = create_backend_app
        self.apps: dict[str, Any] = {}
        self.lock = threading.Lock()

    def app_for(self, service: str) -> Any:
        app = self.apps.get(service)
        if app is None:
            with self.lock:
                app = self.apps.get(service) or self.create_app(service)  # type: ignore[arg-type]
                self.apps[service] = app
        return app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        for prefix, service in _TARGET_PREFIXES.items():
            if target.startswith(prefix):
                return self.app_for(service)(environ, start_response)
        return self.moto(environ, start_response)


def main(argv: list[str] | None = None) -> int:
    """Serve on 127.0.0.1 (a free port unless one is given)."""
    from waitress.server import create_server

    parser = argparse.ArgumentParser(prog="python -m infra.local.moto_process")
    parser.add_argument("--port", type=int, default=0)
    # Every long poll (ReceiveMessage with WaitTimeSeconds) holds a thread for its wait: size this to the
    # pollers (the local stack passes a number from its concurrency).
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args(argv)

    make_dynamodb_atomic()
    make_sqs_quick()
    make_streams_trim()
    # waitress warns when requests queue for a thread; under a load test that is expected.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(Dispatcher(), host="127.0.0.1", port=args.port, threads=args.threads)
    threading.Thread(target=server.run, daemon=True).start()
    print(f"http://127.0.0.1:{server.effective_port}", flush=True)
    stop = threading.Event()
    exit_with_parent(stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    # A stop slower than 5 s leaves every thread's stack on stderr: what held it up (the local stack kills it at 10 s).
    faulthandler.dump_traceback_later(5)
    server.close()
    # Skip the interpreter's finalization: freeing moto's in-memory state (nothing to save) took over 10 s
    # after a 10,000-question run on a busy machine, and the local stack's stop gave up (issue 14).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
