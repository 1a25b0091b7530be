"""``edgeaigc gateway``: the edge gateway of one edge node (local replica on a hit, cloud on a miss).

Also runnable as ``python -m edgeaigc.inference.gateway.cli``. Exit codes: 0 after a graceful
shutdown on SIGTERM, 1 if the server could not start (e.g. the port is taken), 2 for bad usage,
130 on Ctrl-C. A routing table that is missing or invalid at start-up is not fatal: the gateway
answers 503 until a valid one appears (a ConfigMap may be mounted after the pod starts).

Cameras authenticate with a bearer token each (``--camera-tokens``); turning that off takes an
explicit ``--no-camera-auth`` (the traffic twin, a demo on one machine). HTTPS with
``--tls-cert/--tls-key`` (mutual TLS with ``--tls-client-ca``); the relay verifies the cloud with
``--cloud-ca`` and shows ``--cloud-client-cert/--cloud-client-key`` to a cloud that asks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeaigc.inference.http_server import (
    add_body_arguments,
    add_connection_arguments,
    add_log_level_argument,
    add_tls_arguments,
    connection_limits,
    run_app,
    tls_settings,
)

DEFAULT_PORT = 8000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    serves = parser.add_mutually_exclusive_group(required=True)
    serves.add_argument("--edge-node", help="the EdgeNode this gateway serves (its name in the routing table)")
    serves.add_argument(
        "--node-name",
        help="the Kubernetes node this gateway runs on: it serves the EdgeNode whose spec.nodeName this is "
        "(what a DaemonSet pod knows; e.g. from the downward API's spec.nodeName)",
    )
    parser.add_argument(
        "--routing-table",
        required=True,
        metavar="PATH",
        help="routing table file (routing.json of the operator's ConfigMap); re-read when it changes",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="upstream answer timeout in seconds (default: 10)"
    )
    parser.add_argument(
        "--local-timeout",
        type=float,
        default=None,
        metavar="S",
        help="answer timeout of local replicas: a hung one costs each request this long before the cloud "
        "(default: --timeout)",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=1.0, metavar="S", help="upstream connect timeout (default: 1)"
    )
    parser.add_argument(
        "--max-local-attempts",
        type=int,
        default=2,
        metavar="N",
        help="local replicas tried per request before the cloud (default: 2)",
    )
    parser.add_argument(
        "--breaker-failures",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failures that open a local endpoint's circuit breaker (default: 3)",
    )
    parser.add_argument(
        "--breaker-open-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds an open breaker sends traffic to the cloud before probing again (default: 10)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="S", help="routing table poll interval (default: 1)"
    )
    parser.add_argument(
        "--max-request-bytes", default="16Mi", metavar="SIZE", help="larger request bodies get 413 (default: 16Mi)"
    )
    add_body_arguments(parser)
    add_connection_arguments(parser)
    parser.add_argument(
        "--max-cameras",
        type=int,
        default=256,
        metavar="N",
        help="distinct camera labels in the metrics; further cameras are counted as _other (default: 256)",
    )
    parser.add_argument(
        "--bandwidth-shares",
        choices=("enforce", "ignore"),
        default="enforce",
        help="hold each camera to its planned share of the node's uplink (the routing table's bandwidthShare x "
        "uplinkBytesPerSecond): paced, then 429 with Retry-After; an idle camera's share goes to the active ones "
        "(default: enforce)",
    )
    parser.add_argument(
        "--uplink-max-wait",
        type=float,
        default=1.0,
        metavar="S",
        help="longest a request is paced to its camera's share before it gets 429 instead (default: 1)",
    )
    cameras = parser.add_mutually_exclusive_group(required=True)
    cameras.add_argument(
        "--camera-tokens",
        metavar="PATH",
        help="the cameras' bearer tokens: a directory with one file per camera (file name = camera, content = token; "
        "a mounted Secret) or a file of 'camera token' lines; re-read when they change. A request's camera is "
        "its token's; one naming another camera gets 403, one without a valid token 401",
    )
    cameras.add_argument(
        "--no-camera-auth",
        action="store_true",
        help="accept any request and take the camera's name from it (only where no one else can reach the gateway)",
    )
    parser.add_argument(
        "--cloud-ca",
        metavar="PEM",
        help="verify https:// cloud servers against this CA (the TLS Secret's ca.crt) (default: the system's CAs)",
    )
    parser.add_argument(
        "--cloud-client-cert", metavar="PEM", help="client certificate for cloud servers that require mutual TLS"
    )
    parser.add_argument("--cloud-client-key", metavar="PEM", help="the private key of --cloud-client-cert")
    add_tls_arguments(parser)
    add_log_level_argument(parser)


def run(args: argparse.Namespace) -> int:
    from edgeaigc.inference.gateway.app import create_gateway_app
    from edgeaigc.inference.gateway.camera_auth import read_camera_tokens
    from edgeaigc.inference.gateway.gateway import GatewaySettings
    from edgeaigc.inference.gateway.security import GatewaySecurity
    from edgeaigc.inference.server.repository import parse_byte_size

    def usage(message: str) -> int:
        print(f"edgeaigc gateway: {message}", file=sys.stderr)
        return 2

    try:
        max_request_bytes = parse_byte_size(args.max_request_bytes)
        body_memory_bytes = parse_byte_size(args.body_memory)
    except ValueError as error:
        return usage(str(error))
    connections = connection_limits(args)
    if isinstance(connections, str):
        return usage(connections)
    if args.body_timeout <= 0:
        return usage("--body-timeout must be positive")
    if not 0 <= args.port <= 65535:
        return usage(f"--port {args.port} is not a TCP port")
    local_timeout_bad = args.local_timeout is not None and args.local_timeout <= 0
    if args.timeout <= 0 or args.connect_timeout <= 0 or args.poll_interval <= 0 or local_timeout_bad:
        return usage("--timeout, --local-timeout, --connect-timeout and --poll-interval must be positive")
    if args.max_local_attempts < 0 or args.breaker_failures < 1 or args.breaker_open_seconds < 0:
        return usage("--max-local-attempts >= 0, --breaker-failures >= 1, --breaker-open-seconds >= 0")
    if args.max_cameras < 0:
        return usage("--max-cameras must be >= 0")
    if args.uplink_max_wait < 0:
        return usage("--uplink-max-wait must be >= 0")
    if not (args.edge_node or args.node_name):
        return usage("--edge-node / --node-name must not be empty")
    tls = tls_settings(args)
    if isinstance(tls, str):
        return usage(tls)
    security = GatewaySecurity(
        camera_tokens=Path(args.camera_tokens) if args.camera_tokens else None,
        cloud_ca=Path(args.cloud_ca) if args.cloud_ca else None,
        cloud_client_cert=Path(args.cloud_client_cert) if args.cloud_client_cert else None,
        cloud_client_key=Path(args.cloud_client_key) if args.cloud_client_key else None,
    )
    relay_tls = security.relay_tls()
    if isinstance(relay_tls, str):
        return usage(f"--cloud-ca/--cloud-client-cert/--cloud-client-key: {relay_tls}")
    if security.camera_tokens is not None and security.camera_tokens.exists():
        # A missing path is waited for (a Secret may be mounted later); a malformed one is a mistake to say now.
        try:
            read_camera_tokens(security.camera_tokens)
        except (OSError, ValueError) as error:
            return usage(f"--camera-tokens: {error}")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings(
        edge_node=args.edge_node or "",
        node_name=args.node_name or "",
        routing_table=Path(args.routing_table),
        poll_interval_s=args.poll_interval,
        connect_timeout_s=args.connect_timeout,
        timeout_s=args.timeout,
        local_timeout_s=args.local_timeout,
        max_local_attempts=args.max_local_attempts,
        breaker_failures=args.breaker_failures,
        breaker_open_s=args.breaker_open_seconds,
        max_request_bytes=max_request_bytes,
        body_timeout_s=args.body_timeout,
        body_memory_bytes=body_memory_bytes,
        max_cameras=args.max_cameras,
        enforce_uplink_shares=args.bandwidth_shares == "enforce",
        uplink_max_wait_s=args.uplink_max_wait,
    )
    app = create_gateway_app(settings, security=security)
    return run_app(app, args.host, args.port, args.log_level, connections, tls)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.gateway.cli``, the same as ``edgeaigc gateway``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("gateway", argv)


if __name__ == "__main__":
    sys.exit(main())
