"""An S3-compatible server on localhost (moto in server mode), for the demo and the tests."""

from __future__ import annotations

import logging
from collections.abc import Callable

HOST = "127.0.0.1"


def start_embedded_s3(port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve S3 on `HOST:port` (0: a free port) from a thread of this process; returns (url, stop)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise RuntimeError("the embedded S3 server needs moto: pip install 'ftjob[demo]'") from exc
    # werkzeug logs a line per request at INFO: that would bury everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    return f"http://{host}:{bound}", server.stop
