"""moto's server in its own process (``python -m infra.local.moto_process``), with DynamoDB made atomic.

Running "AWS" in another process keeps its CPU off the worker's interpreter (one GIL each), as in AWS.
Prints the server's URL on the first line of stdout, then serves until terminated.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from infra.lifetime import exit_with_parent
from infra.local.atomic import make_dynamodb_atomic


def main() -> int:
    """Serve on 127.0.0.1 (a free port unless one is given)."""
    from moto.server import ThreadedMotoServer

    make_dynamodb_atomic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    print(f"http://{host}:{bound}", flush=True)
    stop = threading.Event()
    exit_with_parent(stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
