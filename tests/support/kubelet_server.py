"""The kubelet's HTTPS endpoint for container logs, so `pods/log` through the real API server works.

The API server serves `GET .../pods/NAME/log` by calling the kubelet of the pod's Node at
`https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/containerLogs/NS/POD/CONTAINER`, passing
`follow`, `tailLines`, `limitBytes`, `sinceSeconds` and `timestamps` through. Without
`--kubelet-certificate-authority` it does not verify the certificate, so one signed by the test CA
(for 127.0.0.1) is enough. Logs come from a callable: the test kubelet reads its processes' output files.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

# (namespace, pod, container) -> the container's output so far, or None when the kubelet has no such one.
LogSource = Callable[[str, str, str], str | None]


def _tail(text: str, query: dict[str, list[str]]) -> str:
    if "tailLines" in query:
        count = int(query["tailLines"][0])
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-count:]) if count > 0 else ""
    if "limitBytes" in query:
        text = text.encode()[: int(query["limitBytes"][0])].decode(errors="ignore")
    return text


class KubeletLogServer:
    """Serves `/containerLogs/...` over HTTPS on a free loopback port, from a background thread."""

    def __init__(self, logs: LogSource, cert_file: Path, key_file: Path) -> None:
        self.logs = logs
        self.requests: list[str] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                source.requests.append(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self._reply(404, f"no such kubelet endpoint: {url.path}")
                    return
                text = source.logs(parts[1], parts[2], parts[3])
                if text is None:
                    self._reply(
                        404, f'container "{parts[3]}" in pod "{parts[2]}" is not known to this kubelet'
                    )
                    return
                self._reply(200, _tail(text, parse_qs(url.query)))

            def _reply(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="kubelet-logs", daemon=True)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def __enter__(self) -> KubeletLogServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
