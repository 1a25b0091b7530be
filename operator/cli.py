"""``edgeaigc operator``: run the operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeaigc.operator.leader import ElectionTimings
    from edgeaigc.operator.learning import LearningSettings

# The namespace of the pod's service account: where an in-cluster operator keeps its Lease.
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument("--metrics-port", type=int, default=8000, help="port of the operator's /metrics (0: off)")
    parser.add_argument("--liveness-port", type=int, default=8080, help="port of /healthz (0: off)")
    parser.add_argument(
        "--peering",
        default="",
        help="kopf peering name: replicas of one peering all pause when they see each other (not leader "
        "election; cannot be combined with --leader-elect)",
    )
    election = parser.add_argument_group(
        "leader election",
        "Several replicas, one active: the holder of a coordination.k8s.io Lease runs the handlers, the "
        "others stand by and take over when it stops renewing (client-go's flags and semantics; the "
        "defaults take over within 15 s of a killed leader).",
    )
    election.add_argument("--leader-elect", action="store_true", help="run the handlers only while holding the Lease")
    election.add_argument(
        "--leader-election-namespace",
        default="",
        help="namespace of the Lease (default: the pod's namespace in a cluster, else the one --namespace)",
    )
    election.add_argument("--leader-election-id", default="edgeaigc-operator", help="name of the Lease")
    election.add_argument(
        "--leader-election-identity",
        default="",
        help="this replica's name in the Lease (default: host name and a random suffix; the chart passes the pod name)",
    )
    election.add_argument(
        "--leader-election-owner-service-account",
        default="",
        metavar="NAME",
        help="make this ServiceAccount (of the Lease's namespace) the Lease's owner, so that deleting it "
        "deletes the Lease (the chart: its operator's; default: none)",
    )
    election.add_argument(
        "--lease-duration",
        type=float,
        default=10.0,
        help="seconds a standby waits after the Lease last changed before taking it over",
    )
    election.add_argument(
        "--renew-deadline",
        type=float,
        default=6.0,
        help="seconds the leader keeps acting without a successful renew (then it stops and exits 1)",
    )
    election.add_argument("--retry-period", type=float, default=1.0, help="seconds between acquire/renew attempts")
    learning = parser.add_argument_group(
        "learning from the live loop",
        "record every applied decision (observation, action, outcome) to rolling NPZ files, and judge a "
        "candidate actor put under the key candidate.onnx of a policy's actor ConfigMap against the current "
        "one on the recorded demand (docs/recording.md)",
    )
    learning.add_argument(
        "--record-dir", type=Path, default=None, help="record into DIR/<namespace>/<policy>/ (default: no recording)"
    )
    learning.add_argument(
        "--record-chunk-intervals", type=int, default=60, help="transitions per file (default %(default)s)"
    )
    learning.add_argument(
        "--record-max-files", type=int, default=100, help="files kept per policy, oldest dropped (default %(default)s)"
    )
    learning.add_argument(
        "--record-max-mb",
        type=float,
        default=64.0,
        help="megabytes kept per policy, oldest files dropped (default %(default)s)",
    )
    learning.add_argument(
        "--promotion-margin",
        type=float,
        default=0.02,
        help="relative objective gap by which a candidate must beat the current actor to be promoted "
        "(default %(default)s)",
    )
    learning.add_argument(
        "--promotion-max-intervals",
        type=int,
        default=240,
        help="most recent recorded intervals a candidate is replayed on; the replay holds the next decision up "
        "(default %(default)s)",
    )
    learning.add_argument(
        "--promotion-min-intervals",
        type=int,
        default=10,
        help="recorded intervals needed to judge a candidate (default %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def peer_identity() -> str:
    """kopf's peer identity (user@host/started), found without ``getpwuid``.

    kopf's own detection asks the password database for the user's name, and a container's numeric
    user (65532 in our images, any ``runAsUser``) has no entry there: the operator crashed at start
    on the first real node with "getpwuid(): uid not found: 65532".
    """
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}/{time.strftime('%Y%m%d%H%M%S')}"


def election_identity(given: str) -> str:
    """client-go's default: the host name and a unique suffix (two processes on one host differ)."""
    return given or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(args: argparse.Namespace) -> str:
    """Where the Lease lives: as given, else the pod's namespace, else the one watched namespace ('' if unknown)."""
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    if POD_NAMESPACE_FILE.exists():
        return POD_NAMESPACE_FILE.read_text().strip()
    return args.namespace[0] if len(args.namespace) == 1 else ""


def learning_settings(args: argparse.Namespace) -> LearningSettings | None:
    """The learning settings of the flags (None without --record-dir).

    Raises:
        ValueError: a bound below 1 or a negative margin.
    """
    from edgeaigc.operator.learning import LearningSettings

    if args.record_dir is None:
        return None
    if min(args.record_chunk_intervals, args.record_max_files, args.promotion_min_intervals) < 1:
        raise ValueError("--record-chunk-intervals, --record-max-files and --promotion-min-intervals must be >= 1")
    if args.promotion_max_intervals < args.promotion_min_intervals:
        raise ValueError("--promotion-max-intervals must be >= --promotion-min-intervals")
    if args.record_max_mb <= 0 or args.promotion_margin < 0:
        raise ValueError("--record-max-mb must be > 0 and --promotion-margin >= 0")
    return LearningSettings(
        record_dir=args.record_dir,
        chunk_intervals=args.record_chunk_intervals,
        max_files=args.record_max_files,
        max_bytes=int(args.record_max_mb * (1 << 20)),
        promotion_margin=args.promotion_margin,
        min_intervals=args.promotion_min_intervals,
        max_replay_intervals=args.promotion_max_intervals,
    )


def _bad(message: str) -> int:
    print(f"edgeaigc operator: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if not args.namespace and not args.all_namespaces:
        return _bad("give --namespace NS (repeatable) or --all-namespaces")
    from edgeaigc.operator.builders import cloud_replica_resources

    try:  # checked here, once, rather than in every decision's manifests
        cloud_replica_resources()
    except ValueError as error:
        return _bad(f"EDGEAIGC_CLOUD_REPLICA_CPU/EDGEAIGC_CLOUD_REPLICA_MEMORY: {error}")
    try:
        learning = learning_settings(args)
    except ValueError as error:
        return _bad(str(error))
    if args.leader_elect:
        from edgeaigc.operator.leader import ElectionTimings

        if args.peering:
            # A new leader would find the dead one's keep-alive in the peering and pause until it expires
            # (kopf's 60 s), far beyond the takeover the Lease gives; the Lease already keeps one replica active.
            return _bad("--peering and --leader-elect exclude each other: the Lease alone decides who acts")
        timings = ElectionTimings(args.lease_duration, args.renew_deadline, args.retry_period)
        if problems := timings.problems():
            return _bad("; ".join(problems))
        if not lease_namespace(args):
            return _bad("give --leader-election-namespace (the Lease's namespace is not evident here)")
    import kopf
    from kopf._core.engines.peering import Identity  # kopf.run's identity type (a NewType of str)

    from edgeaigc.operator.handlers import operator_settings  # importing it registers the handlers

    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    kopf.configure(verbose=args.verbose)
    kopf_arguments: dict[str, Any] = {
        "settings": operator_settings(),
        "namespaces": args.namespace,
        "clusterwide": args.all_namespaces,
        "identity": Identity(peer_identity()),
        "liveness_endpoint": f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
    }
    if args.leader_elect:
        return run_elected(args, kopf_arguments, timings, learning)
    kopf.run(
        memo=kopf.Memo(learning=learning),
        # Two replicas never both act: with a peering object the others pause.
        standalone=not args.peering,
        peering_name=args.peering or None,
        **kopf_arguments,
    )
    return 0


def lease_owner(core: Any, namespace: str, service_account: str) -> Any:
    """The owner reference of the Lease: the named ServiceAccount, or None (none named, or it cannot be
    read: the election works without an owner, only uninstalling then leaves the Lease behind)."""
    if not service_account:
        return None
    from kubernetes import client

    try:
        account = core.read_namespaced_service_account(service_account, namespace, _request_timeout=10)
    except Exception as error:
        logging.getLogger(__name__).warning(
            "ServiceAccount %s/%s not read (%s): the Lease gets no owner", namespace, service_account, error
        )
        return None
    return client.V1OwnerReference(
        api_version="v1", kind="ServiceAccount", name=service_account, uid=account.metadata.uid
    )


def run_elected(
    args: argparse.Namespace,
    kopf_arguments: dict[str, Any],
    timings: ElectionTimings,
    learning: LearningSettings | None = None,
) -> int:
    """kopf in standalone mode, started only once this replica holds the Lease."""
    import asyncio

    import kopf
    from kubernetes import client

    from edgeaigc.operator import elected
    from edgeaigc.operator.handlers import api_client
    from edgeaigc.operator.leader import LeaseElector

    api = api_client()
    namespace = lease_namespace(args)
    elector = LeaseElector(
        client.CoordinationV1Api(api),
        namespace,
        args.leader_election_id,
        election_identity(args.leader_election_identity),
        timings,
        owner=lease_owner(client.CoreV1Api(api), namespace, args.leader_election_owner_service_account),
    )

    async def start_operator(stop_flag: asyncio.Event, ready_flag: asyncio.Event) -> None:
        # The handlers find the fence in the memo and check it right before every write.
        memo = kopf.Memo(fence=elector.fenced, learning=learning)
        await kopf.operator(standalone=True, stop_flag=stop_flag, ready_flag=ready_flag, memo=memo, **kopf_arguments)

    return asyncio.run(elected.run_elected(elector, api, start_operator, args.liveness_port))
