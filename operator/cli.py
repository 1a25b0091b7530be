"""``edgeaigc operator``: run the operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument("--metrics-port", type=int, default=8000, help="port of the operator's /metrics (0: off)")
    parser.add_argument("--liveness-port", type=int, default=8080, help="port of /healthz (0: off)")
    parser.add_argument("--peering", default="", help="kopf peering name (needed when running several replicas)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def peer_identity() -> str:
    """kopf's peer identity (user@host/started), found without ``getpwuid``.

    kopf's own detection asks the password database for the user's name, and a container's numeric
    user (65532 in our images, any ``runAsUser``) has no entry there: the operator crashed at start
    on the first real node with "getpwuid(): uid not found: 65532".
    """
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}/{time.strftime('%Y%m%d%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    if not args.namespace and not args.all_namespaces:
        print("edgeaigc operator: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return 2
    import kopf
    from kopf._core.engines.peering import Identity  # kopf.run's identity type (a NewType of str)

    from edgeaigc.operator.handlers import operator_settings  # importing it registers the handlers

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    kopf.configure(verbose=args.verbose)
    kopf.run(
        settings=operator_settings(),
        # Two replicas never both act: with a peering object the others pause (see the Helm chart).
        standalone=not args.peering,
        peering_name=args.peering or None,
        namespaces=args.namespace,
        clusterwide=args.all_namespaces,
        identity=Identity(peer_identity()),
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
    )
    return 0
