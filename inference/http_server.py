"""Running a FastAPI app under uvicorn the way every edgeaigc server does (model server, gateway).

A graceful stop on SIGTERM (how Kubernetes ends a pod) exits 0; a server that cannot start (port
taken, start-up failure) exits 1.

**Connection limits** (:class:`ConnectionLimits`): uvicorn's own ``limit_concurrency``
(connections and requests at once; past it 503) and ``timeout_keep_alive``, and a size limit and
a deadline for request heads, which uvicorn's fast httptools protocol lacks
(:mod:`edgeaigc.inference.http_protocol`). Bodies have their own limits
(:mod:`edgeaigc.inference.request_body`).

**TLS** (:mod:`edgeaigc.inference.tls`): ``--tls-cert/--tls-key`` serve HTTPS through uvicorn's own
SSL options (the transport decrypts; the guarded protocol class sees plain HTTP as before), and
``--tls-client-ca`` requires client certificates. A renewed certificate is loaded without a restart.
"""

from __future__ import annotations

import argparse
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeaigc.inference.tls import ServerTls

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server allows its clients' connections."""

    max_connections: int = 256
    """Connections (and requests) at once; a request past it gets uvicorn's 503."""
    head_timeout_s: float = 10.0
    """A request head (request line and headers) must be complete this long after it began."""
    max_head_bytes: int = 16 * 1024
    """Largest request head (the default of uvicorn's h11 protocol); larger ones get 400."""
    keep_alive_s: int = 5
    """An idle keep-alive connection is closed after this long (uvicorn's default)."""


def server_config(app: Any, limits: ConnectionLimits, **settings: Any) -> Any:
    """uvicorn's Config for ``app`` with ``limits`` (``settings``: host, port, log_level, ...)."""
    # Imported here so that `edgeaigc --help` stays fast and needs none of the serving packages.
    import uvicorn

    from edgeaigc.inference.http_protocol import GuardedHttpToolsProtocol

    protocol = type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
    return uvicorn.Config(
        app,
        http=protocol,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,
        access_log=False,
        **settings,
    )


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="log level (default: info)")


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ConnectionLimits()
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help=f"connections at once; a request past it gets 503 (default: {defaults.max_connections})",
    )
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=defaults.head_timeout_s,
        metavar="S",
        help="a request's line and headers must arrive within this many seconds, else the connection is closed "
        f"(default: {defaults.head_timeout_s:g})",
    )


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (:mod:`edgeaigc.inference.tls`)."""
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTPS with this certificate chain (a kubernetes.io/tls Secret's tls.crt; re-read when renewed) "
        "(default: plain HTTP)",
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert (tls.key)")
    parser.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require a client certificate signed by this CA (mutual TLS; e.g. the Secret's ca.crt) "
        "(default: none asked)",
    )


def tls_settings(args: argparse.Namespace) -> ServerTls | str | None:
    """The TLS of :func:`add_tls_arguments` (None: plain HTTP), or what is wrong with it."""
    from edgeaigc.inference.tls import server_tls

    return server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)


def add_body_arguments(parser: argparse.ArgumentParser) -> None:
    """``--body-timeout`` and ``--body-memory`` (:mod:`edgeaigc.inference.request_body`)."""
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a request body must arrive whole within this many seconds, else 408 (default: 30)",
    )
    parser.add_argument(
        "--body-memory",
        default="64Mi",
        metavar="SIZE",
        help="request-body bytes held at once over all requests; a request past it gets 503 with Retry-After "
        "(default: 64Mi)",
    )


def connection_limits(args: argparse.Namespace) -> ConnectionLimits | str:
    """The limits of :func:`add_connection_arguments`, or what is wrong with them."""
    if args.max_connections < 1 or args.head_timeout <= 0:
        return "--max-connections must be at least 1 and --head-timeout positive"
    return ConnectionLimits(max_connections=args.max_connections, head_timeout_s=args.head_timeout)


def run_app(
    app: Any,
    host: str,
    port: int,
    log_level: str,
    limits: ConnectionLimits | None = None,
    tls: ServerTls | None = None,
) -> int:
    """Serve ``app`` until stopped (HTTPS with ``tls``); 0 after a graceful stop, 1 if it could not start."""
    import uvicorn

    from edgeaigc.inference.tls import CertificateReloader, ClientCertificateGate

    settings = tls.uvicorn_settings() if tls else {}
    if tls is not None and tls.client_ca_file is not None:
        app = ClientCertificateGate(app)
    config = server_config(app, limits or ConnectionLimits(), host=host, port=port, log_level=log_level, **settings)
    server = uvicorn.Server(config)
    stop_reloading = threading.Event()
    if tls is not None:
        config.load()  # builds the SSLContext now (the server skips a loaded config), for the reloader to update
        reloader = CertificateReloader(config.ssl, tls)
        threading.Thread(target=reloader.watch, args=(stop_reloading,), daemon=True, name="tls-reload").start()
    in_main_thread = threading.current_thread() is threading.main_thread()
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the handler
    # it found; with this one, that graceful stop exits 0, not -15.
    previous = signal.signal(signal.SIGTERM, _after_graceful_shutdown) if in_main_thread else None
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot start
        return 1
    finally:
        stop_reloading.set()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def _after_graceful_shutdown(signum: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown: nothing left to do."""
