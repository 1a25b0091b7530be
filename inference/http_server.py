"""Running a FastAPI app under uvicorn the way every edgeaigc server does (model server, gateway).

A graceful stop on SIGTERM (how Kubernetes ends a pod) exits 0; a server that cannot start (port
taken, start-up failure) exits 1.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default: info)")


def run_app(app: Any, host: str, port: int, log_level: str) -> int:
    """Serve ``app`` until stopped; 0 after a graceful stop, 1 if it could not start."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
    in_main_thread = threading.current_thread() is threading.main_thread()
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the handler
    # it found; with this one, that graceful stop exits 0, not -15.
    previous = signal.signal(signal.SIGTERM, _after_graceful_shutdown) if in_main_thread else None
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot start
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def _after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown: nothing left to do."""
