"""``edgeaigc twin`` (also ``python -m edgeaigc.cluster.twin``): play the gateways of a fleet, export their metrics."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from kubernetes.config.config_exception import ConfigException

from edgeaigc.cluster import prometheus as prom
from edgeaigc.cluster.twin.fleet_source import KubernetesSource, api_client
from edgeaigc.cluster.twin.metrics_server import serve_metrics
from edgeaigc.cluster.twin.registration import JOB, registered, registration_dir
from edgeaigc.cluster.twin.twin import DEFAULT_TICK_SECONDS, Twin
from edgeaigc.policy.scenario import load_scenario

log = logging.getLogger("edgeaigc.twin")

DEFAULT_NAMESPACE = "traffic-city"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Play the edge gateways of a namespace's fleet: serve the demand of a drifting trace under the "
        "placement the cluster runs (system model of policy/) and export the gateways' metrics. "
        "One tick plays one slot of the policy's interval; request rates stay per real second."
    )
    parser.add_argument(
        "--namespace", "-n", default=DEFAULT_NAMESPACE, help=f"the fleet's namespace (default: {DEFAULT_NAMESPACE})"
    )
    parser.add_argument("--policy", default=None, help="PlacementPolicy name (default: the namespace's only one)")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig (default: $KUBECONFIG, else the running local cluster's, else ~/.kube/config)",
    )
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=DEFAULT_TICK_SECONDS,
        help=f"real seconds per simulated slot (default: {DEFAULT_TICK_SECONDS:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demand trace and request counts (default: 0)")
    parser.add_argument(
        "--trace-slots",
        type=int,
        default=None,
        help="slots per demand trace (default: one simulated day, fewer for a fleet whose day's trace would "
        "take over 512 MiB)",
    )
    parser.add_argument(
        "--demand-from",
        default=None,
        metavar="SCENARIO",
        help="take the demand settings (daily profile, drift, bursts) from a scenario: a bundled name "
        "(e.g. traffic-city) or a YAML path (default: the simulator's defaults)",
    )
    parser.add_argument("--address", default="127.0.0.1", help="address of /metrics (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of /metrics (default: 0, any free port)")
    parser.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"register as Prometheus target (job {JOB}) of a local cluster (default: if one runs Prometheus)",
    )
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=None,
        help="the local cluster's directory to register in (default: that of `edgeaigc cluster up`)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: INFO)"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s twin %(levelname)s %(message)s", force=True)
    # The client's retries would log every attempt while the API server is away; the twin says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        demand = load_scenario(args.demand_from).demand if args.demand_from else None
        twin = Twin(
            KubernetesSource(api_client(args.kubeconfig)),
            args.namespace,
            policy=args.policy,
            seed=args.seed,
            tick_seconds=args.tick_seconds,
            trace_slots=args.trace_slots,
            demand=demand,
        )
        registration = registration_dir(args.register, args.cluster_dir)
    except (ValueError, OSError, ConfigException, prom.PrometheusError) as error:
        log.error("%s", error)
        return 2
    server, address = serve_metrics(twin.metrics, args.address, args.port)
    log.info("metrics at http://%s/metrics", address)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with registered(registration, address, args.namespace):
            twin.run(stop, args.duration)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        server.shutdown()
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.cluster.twin``, the same as ``edgeaigc twin``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("twin", argv)


if __name__ == "__main__":
    raise SystemExit(main())
