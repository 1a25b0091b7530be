"""``edgeaigc cluster up|down|kubeconfig|prometheus-url|status|build|certificate``: the local control plane."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeaigc.cluster import network
from edgeaigc.cluster.components import BuildError, binaries, ensure_binaries
from edgeaigc.cluster.local import DEFAULT_NAME, ClusterError, ClusterState, _alive, cluster_dir, down, up
from edgeaigc.cluster.prometheus import DEFAULT_SCRAPE_INTERVAL_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default: {DEFAULT_NAME})")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser(
        "up", allow_abbrev=False, help="build the pinned binaries once, start the cluster, create fake nodes"
    )
    start.add_argument(
        "--nodes", type=Path, default=None, help="nodes file (default: 3 Pi-like edge nodes + 1 cloud node)"
    )
    start.add_argument(
        "--real-nodes",
        type=int,
        default=0,
        metavar="N",
        help="also start N real nodes (kubelet, containerd, runc, CNI) running the project's images, built here "
        "first if needed; Pi-like: 1 CPU and 2 GiB allocatable each (default: 0, kwok nodes only)",
    )
    start.add_argument(
        "--real-cloud-node",
        action="store_true",
        help="with --real-nodes, also a real cloud node (cloud-real-0: 2 CPU and 6 GiB allocatable) in place of "
        "the fake cloud node, so that misses are served by real containers (default: off)",
    )
    start.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --real-nodes, enforce NetworkPolicies with kube-router's policy controller, a host process "
        "(default: on; --no-network-policy leaves them ignored, as the CNI bridge alone does)",
    )
    start.add_argument("--timeout", type=float, default=60.0, help="seconds each component may take to become ready")
    start.add_argument(
        "--prometheus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run Prometheus too (default: when its binary is installed; Debian: apt-get install prometheus)",
    )
    start.add_argument(
        "--scrape-interval",
        type=float,
        default=DEFAULT_SCRAPE_INTERVAL_S,
        metavar="SECONDS",
        help=f"Prometheus scrape interval (default: {DEFAULT_SCRAPE_INTERVAL_S:g})",
    )
    actions.add_parser("down", allow_abbrev=False, help="stop the cluster and delete its state")
    actions.add_parser("kubeconfig", allow_abbrev=False, help="print the path of the cluster's kubeconfig")
    actions.add_parser("prometheus-url", allow_abbrev=False, help="print the URL of the cluster's Prometheus")
    actions.add_parser("status", allow_abbrev=False, help="say which components are running")
    actions.add_parser(
        "build", allow_abbrev=False, help="only build (or find cached) binaries, and fetch helm; print their paths"
    )
    certificate = actions.add_parser(
        "certificate",
        allow_abbrev=False,
        help="make a TLS Secret for the data plane (kubernetes.io/tls with ca.crt, as cert-manager writes it) "
        "signed by the cluster's data-plane CA, and apply it to the cluster",
    )
    certificate.add_argument("secret", metavar="NAME", help="the Secret's name (the chart's tls.secretName)")
    certificate.add_argument(
        "--dns",
        action="append",
        required=True,
        metavar="NAME",
        help="a DNS name or IP address the certificate is for (repeatable), e.g. '*.NAMESPACE.svc' for every "
        "Service of a namespace",
    )
    certificate.add_argument("-n", "--namespace", default="default", help="the Secret's namespace (default: default)")
    certificate.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write tls.crt, tls.key and ca.crt to DIR (and the CA's files to DIR/dataplane-ca) instead of "
        "applying the Secret to the cluster",
    )


def run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"[cluster] {message}", file=sys.stderr, flush=True)

    if args.action == "up" and not 0 <= args.real_nodes <= network.MAX_REAL_NODES:
        print(
            f"edgeaigc cluster: --real-nodes must be 0..{network.MAX_REAL_NODES}, not {args.real_nodes}",
            file=sys.stderr,
        )
        return 2
    if args.action == "up" and args.real_cloud_node and not args.real_nodes:
        print("edgeaigc cluster: --real-cloud-node needs --real-nodes N (at least one real edge node)", file=sys.stderr)
        return 2
    if args.action == "certificate":
        return _certificate(args)
    try:
        if args.action == "up":
            started = up(
                args.name,
                args.nodes,
                progress=progress,
                timeout_s=args.timeout,
                prometheus=args.prometheus,
                scrape_interval_s=args.scrape_interval,
                real_nodes=args.real_nodes,
                network_policy=args.network_policy,
                real_cloud_node=args.real_cloud_node,
            )
            print(started.kubeconfig)
            return 0
        if args.action == "down":
            return 0 if down(args.name, progress=progress) else 1
        if args.action == "build":
            paths = ensure_binaries(progress, helm=True, real_nodes=True)
            for field, path in vars(paths).items():
                print(f"{field}: {path}")
            return 0
        state = ClusterState.load(cluster_dir(args.name))
        if state is None:
            print(f"no cluster {args.name!r}; start one with `edgeaigc cluster up`", file=sys.stderr)
            return 1
        if args.action == "kubeconfig":
            print(state.kubeconfig)
            return 0
        if args.action == "prometheus-url":
            pid = state.pids.get("prometheus")
            if state.prometheus_url is None or pid is None or not _alive(pid):
                print(f"cluster {args.name!r} runs no Prometheus (see `edgeaigc cluster up --help`)", file=sys.stderr)
                return 1
            print(state.prometheus_url)
            return 0
        running = {component: _alive(pid) for component, pid in state.pids.items()}
        for component, alive in running.items():
            print(f"{component:20s} {'running' if alive else 'STOPPED'} (pid {state.pids[component]})")
        print(f"server: {state.server}\nkubeconfig: {state.kubeconfig}")
        print(f"prometheus: {state.prometheus_url or '(not running)'}")
        return 0 if all(running.values()) else 1
    except (BuildError, ClusterError) as error:
        print(f"edgeaigc cluster: {error}", file=sys.stderr)
        return 1


def _certificate(args: argparse.Namespace) -> int:
    """``cluster certificate``: files in ``--output-dir``, or the Secret applied to the running cluster."""
    from edgeaigc.cluster.certificate import make_certificate, secret_json, tls_secret, write_files
    from edgeaigc.cluster.kubectl import KubectlFailed, kubectl

    names = [name.strip() for name in args.dns if name.strip()]
    if not names:
        print("edgeaigc cluster certificate: --dns must name at least one host", file=sys.stderr)
        return 2
    if args.output_dir is not None:
        cert_pem, key_pem, ca_pem = make_certificate(args.output_dir, names, args.secret)
        write_files(args.output_dir, cert_pem, key_pem, ca_pem)
        print(args.output_dir)
        return 0
    state = ClusterState.load(cluster_dir(args.name))
    if state is None:
        print(
            f"edgeaigc cluster certificate: no cluster {args.name!r} (start one, or write files with --output-dir)",
            file=sys.stderr,
        )
        return 1
    cert_pem, key_pem, ca_pem = make_certificate(cluster_dir(args.name), names, args.secret)
    secret = tls_secret(args.secret, args.namespace, cert_pem, key_pem, ca_pem)
    try:
        print(kubectl(state.kubeconfig, "apply", "--server-side", "-f", "-", stdin=secret_json(secret)).strip())
    except KubectlFailed as error:
        print(f"edgeaigc cluster certificate: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = ["add_arguments", "binaries", "run"]
