"""``/metrics`` of the twin over HTTP, in a thread (the text of :meth:`TwinMetrics.exposition`)."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from edgeaigc.cluster.twin.metrics import TwinMetrics


def serve_metrics(metrics: TwinMetrics, address: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """Serve ``metrics`` at ``http://address:port/metrics`` in a thread; return the server and its ``host:port``.

    The text format from :meth:`TwinMetrics.exposition` (not the client library's own server: see there).
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the twin's log

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="twin-metrics", daemon=True).start()
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    return server, f"{host}:{server.server_port}"
