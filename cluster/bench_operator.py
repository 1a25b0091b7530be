"""``edgeaigc bench-operator``: decision and reconcile time, and API writes per interval, on a real control plane.

Starts a local cluster with ``--edge-nodes`` Pi-like kwok nodes and one cloud node, creates a fleet
of that many EdgeNodes, ``--models`` InferenceModels (the traffic-city models, repeated as
``<name>-v<k>`` past twelve) and ``--cameras`` Cameras spread over the nodes, runs the traffic twin
as a separate process (scraped by the cluster's Prometheus), and then runs the operator's
:class:`~edgeaigc.operator.loop.DecisionLoop` in this process every ``--interval`` seconds —
once writing every change as it comes (``eager``: CPU in the pod template, no hysteresis; the
operator before in-place resize) and once as the operator does now (``in-place``: CPU resized
in place, hysteresis, unchanged objects left alone), each on a fresh cluster on the same
demand (same twin seed). A fresh cluster, not only a fresh namespace: the operator's queries
are not scoped to a namespace, and the first mode's series would stay in the second's trend
window. It prints, per mode, observe / decide / plan / reconcile times, API writes and the load
average per interval (p50 and max over the intervals after the first, which creates the fleet's
objects), the Prometheus queries the operator sent and the series Prometheus holds (its
``prometheus_tsdb_head_series``) per interval, and writes them as JSON with ``--output``;
``--check`` exits 1 when a figure misses its target in :data:`TARGETS`.

"observe" is everything before the policy acts: reading the custom resources and the policy's
objects (from the operator's watch-based caches, listed once) and the Prometheus queries (a fixed
number, whatever the fleet's size, sent at once).
At 100 nodes x 20 models x 400 cameras the twin exports ~16 000 series (~88 600 when it counted
requests per camera and model; ``docs/metrics-contract.md``, "Series per gateway"); the scrape
interval (and timeout) is ``--scrape-interval`` (10 s was needed at 88 600) and the decision
interval at least three scrapes.
Every placed (model, edge node) has a ClusterIP Service, so the local cluster's Service range
must hold old and new placements together (see ``SERVICE_CIDR`` in :mod:`.local`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgeaigc.cluster.demo import _repo_file
from edgeaigc.cluster.kubectl import kubectl
from edgeaigc.cluster.local import ClusterError, ClusterState, down, up
from edgeaigc.cluster.processes import spawn_twin, stop
from edgeaigc.cluster.prometheus import query
from edgeaigc.inference.bench.load import process_cpu_seconds, process_rss_mib
from edgeaigc.inference.metrics_contract import REQUESTS_TOTAL
from edgeaigc.operator.observe import QUERIES_PER_READ, PrometheusObserver
from edgeaigc.policy.registry import shipped_actor

if TYPE_CHECKING:  # the operator (kubernetes, kopf) is imported only when a run needs it
    from edgeaigc.operator.decide import Decision

REPRODUCE = """\
how to reproduce (2 cores; each run starts and stops its own clusters, `edgeaigc cluster build` once first):
  edgeaigc bench-operator --output /tmp/bench/default.json
  edgeaigc bench-operator --edge-nodes 100 --models 20 --cameras 400 --interval 30 \\
      --scrape-interval 10 --output /tmp/bench/large.json
  # issue 15's targets (steady demand: one twin slot per decision; caches filled before measuring):
  edgeaigc bench-operator --edge-nodes 100 --models 20 --cameras 400 --interval 30 --tick 30 \\
      --scrape-interval 10 --modes in-place --intervals 8 --warmup 4 --check
  # the same nodes as 4 PlacementPolicies of 25 (README, "Sharding a large fleet"):
  edgeaigc bench-operator --edge-nodes 100 --models 20 --cameras 400 --interval 30 --tick 30 \\
      --scrape-interval 10 --modes in-place --intervals 7 --warmup 3 --shards 4
The figures depend on the machine's load: each row carries the 1-minute load average.
EDGEAIGC_APISERVER_VERBOSITY=3 makes the API server log every request with its status code
(logs under ~/.cache/edgeaigc/clusters/bench-operator-*/logs, kept with --keep-cluster)."""

#: The per-interval figures summarised over the steady intervals.
STEADY_FIGURES = (
    "observe_ms", "prometheus_ms", "decide_ms", "guard_ms", "plan_ms", "decision_ms", "counterfactual_ms",
    "reconcile_ms", "writes", "load1", "queries", "series",
    "decide_plan_ms", "status_writes", "moved", "moved_percent", "unexplained_writes", "operator_rss_mib",
    "all_shards_ms",
)  # fmt: skip
FLEET_OBJECTS_PER_APPLY = 500
#: The cluster's processes whose CPU and memory each interval reports (beside the operator and the twin).
USAGE_COMPONENTS = ("etcd", "apiserver", "controller_manager", "scheduler", "kwok", "prometheus")


@dataclasses.dataclass(frozen=True)
class Target:
    """A figure ``--check`` holds the steady intervals to: ``statistic`` of ``key`` at most ``limit``."""

    what: str
    key: str
    limit: float
    unit: str
    statistic: str = "p50"


#: API writes a moved placement may explain: its Deployment and Service (applied or deleted), the
#: status of its EdgeNode and InferenceModel, and the CPU resizes of the models it shares a node with.
WRITES_PER_MOVE = 6
#: Writes an interval may make without any move: the routing table, the policy's status, one more.
WRITES_WITHOUT_MOVES = 3


#: Issue 15's targets at 100 edge nodes x 20 models x 400 cameras (add a row to check another figure).
TARGETS: tuple[Target, ...] = (
    Target("observe", "observe_ms", 300.0, "ms"),
    Target("Prometheus queries per interval", "queries", QUERIES_PER_READ, "", "max"),
    # O(nodes x models + cameras): 17 024 measured here (the twin's 12 604, the recorded 4 000, Prometheus's
    # own); 89 014 with per-(camera, model) series.
    Target("Prometheus series", "series", 20_000, "", "max"),
    Target("decide + plan", "decide_plan_ms", 300.0, "ms"),
    Target("reconcile", "reconcile_ms", 1000.0, "ms"),
    Target("placements moved per interval", "moved_percent", 5.0, "%"),
    Target(f"API writes beyond {WRITES_PER_MOVE} per moved placement", "unexplained_writes", WRITES_WITHOUT_MOVES, ""),
)


def check_targets(steady: dict[str, dict[str, float]], targets: tuple[Target, ...] = TARGETS) -> list[str]:
    """One line per target, ``met`` or ``MISSED``, for a mode's steady figures (a missing figure is missed)."""
    lines = []
    for target in targets:
        value = (steady.get(target.key) or {}).get(target.statistic, float("nan"))
        met = value <= target.limit  # NaN (no steady interval) compares False: missed
        lines.append(
            f"{'met' if met else 'MISSED'}: {target.what} {target.statistic} {value:.1f}{target.unit} "
            f"(target <= {target.limit:g}{target.unit})"
        )
    return lines


class ProcessUsage:
    """CPU (% of one core, since the last sample) and resident memory of named processes, sampled each interval."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._last = {name: (time.monotonic(), process_cpu_seconds(pid)) for name, pid in self.pids.items()}

    def sample(self) -> dict[str, dict[str, float | None]]:
        figures: dict[str, dict[str, float | None]] = {}
        for name, pid in self.pids.items():
            now, cpu = time.monotonic(), process_cpu_seconds(pid)
            then, cpu_then = self._last[name]
            percent = None
            if cpu is not None and cpu_then is not None and now > then:
                percent = 100.0 * (cpu - cpu_then) / (now - then)
            self._last[name] = (now, cpu)
            figures[name] = {"cpu_percent": percent, "rss_mib": process_rss_mib(pid)}
        return figures


def usage_line(usage: dict[str, dict[str, float | None]]) -> str:
    """``name cpu% / RSS MiB`` per process, for the per-interval line."""
    parts = []
    for name, figures in usage.items():
        cpu, rss = figures["cpu_percent"], figures["rss_mib"]
        parts.append(f"{name} {'?' if cpu is None else f'{cpu:.0f}'}% {'?' if rss is None else f'{rss:.0f}'} MiB")
    return ", ".join(parts)


def _head_series(url: str) -> int | None:
    """Series in Prometheus's head block now (None: not known)."""
    result = query(url, "prometheus_tsdb_head_series")
    return int(float(result[0]["value"][1])) if result else None


EDGE_NODE_CAPACITY = {"cpu": "4", "memory": "4Gi", "pods": "110", "ephemeral-storage": "32Gi"}


def moves(decision: Decision) -> tuple[int, float]:
    """Placements moved by a decision (newly cached plus evicted) and their share of the placements it found."""
    moved = len(decision.newly_cached) + len(decision.evicted)
    before = sum(len(models) for models in decision.previous_placement.values())
    return moved, 100.0 * moved / before if before else 0.0


def nodes_file(edge_nodes: int, models: int, shards: int = 1) -> dict[str, Any]:
    """kwok nodes: ``edge_nodes`` Pi-like nodes and one cloud node large enough for every cloud replica
    (each shard has its own, one per model)."""
    cloud_cores = max(32, 2 * models * shards)
    return {
        "nodes": [
            {
                "name": "pi-{i}",
                "count": edge_nodes,
                "labels": {
                    "kubernetes.io/arch": "arm64",
                    "kubernetes.io/os": "linux",
                    "node.kubernetes.io/instance-type": "raspberry-pi-4",
                    "edgeaigc.io/tier": "edge",
                },
                "capacity": EDGE_NODE_CAPACITY,
            },
            {
                "name": "cloud-{i}",
                "count": 1,
                "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "edgeaigc.io/tier": "cloud"},
                "capacity": {"cpu": str(cloud_cores), "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti"},
            },
        ]
    }


def fleet(
    namespace: str,
    edge_nodes: int,
    models: int,
    cameras: int,
    algorithm: str,
    guard: bool = True,
    switching_horizon_slots: float = 0.0,
    shards: int = 1,
) -> list[dict[str, Any]]:
    """The custom resources of a fleet of the given size, built from the traffic-city samples.

    With ``shards`` > 1 the EdgeNodes are labelled into that many contiguous groups of (about) equal
    size (:data:`SHARD_LABEL`) and there is one PlacementPolicy per group (``bench-<k>``, selecting it);
    else one PlacementPolicy ``bench`` without a selector. The policies come last.
    """
    samples = [d for p in sorted(_repo_file("examples").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in samples:
        by_kind.setdefault(document["kind"], []).append(document)
    node_spec = by_kind["EdgeNode"][0]["spec"]
    base_models = by_kind["InferenceModel"]
    base_cameras = by_kind["Camera"]
    documents: list[dict[str, Any]] = []

    def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "edgeaigc.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    for i in range(edge_nodes):
        node = resource("EdgeNode", f"pi-{i}", {**node_spec, "nodeName": f"pi-{i}"})
        if shards > 1:
            node["metadata"]["labels"] = {SHARD_LABEL: shard_name(i * shards // edge_nodes)}
        documents.append(node)
    for k in range(models):
        base = base_models[k % len(base_models)]
        suffix = "" if k < len(base_models) else f"-v{k // len(base_models)}"
        documents.append(resource("InferenceModel", base["metadata"]["name"] + suffix, dict(base["spec"])))
    documents += [
        resource(
            "Camera", f"camera-{u}", {"edgeNode": f"pi-{u % edge_nodes}", "fps": base_cameras[u % 40]["spec"]["fps"]}
        )
        for u in range(cameras)
    ]
    policy = dict(by_kind["PlacementPolicy"][0])
    spec = {
        **policy["spec"],
        "algorithm": algorithm,
        "guard": {**policy["spec"].get("guard", {}), "enabled": guard},
        "switchingHorizonSlots": switching_horizon_slots,
    }
    if algorithm in ("td3", "ddpg"):
        spec["actor"] = {"configMapName": "bench-actor", "key": "actor.onnx"}
    else:
        spec.pop("actor", None)
    if shards == 1:
        documents.append(resource("PlacementPolicy", "bench", spec))
    for k in range(shards if shards > 1 else 0):
        selector = {"matchLabels": {SHARD_LABEL: shard_name(k)}}
        documents.append(resource("PlacementPolicy", shard_name(k), {**spec, "edgeNodeSelector": selector}))
    return documents


#: The label that puts a benchmark EdgeNode into a shard (``--shards``).
SHARD_LABEL = "edgeaigc.io/shard"


def shard_name(k: int) -> str:
    """Shard ``k``'s label value and PlacementPolicy name."""
    return f"bench-{k}"


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "max": max(values)} if values else {"p50": float("nan"), "max": 0.0}


def _scrape_seconds(url: str, namespace: str) -> float | None:
    """How long Prometheus's last scrape of the twin took (None: not scraped yet)."""
    result = query(url, f'max(scrape_duration_seconds{{namespace="{namespace}"}})')
    return float(result[0]["value"][1]) if result else None


def run_mode(
    state: ClusterState, mode: str, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:  # pragma: no cover - needs a cluster (exercised by running the command)
    from kubernetes import config

    from edgeaigc.operator.handlers import write_results
    from edgeaigc.operator.loop import DecisionLoop
    from edgeaigc.operator.object_cache import ObjectCaches
    from edgeaigc.operator.reconcile import DEFAULT_WRITES, EAGER

    namespace = f"bench-{mode}"
    documents = fleet(
        namespace,
        args.edge_nodes,
        args.models,
        args.cameras,
        args.algorithm,
        args.guard == "on",
        args.switching_horizon,
        args.shards,
    )
    policy_names = [d["metadata"]["name"] for d in documents if d["kind"] == "PlacementPolicy"]
    for policy_doc in documents:
        if policy_doc["kind"] == "PlacementPolicy":
            policy_doc["spec"].update(intervalSeconds=int(args.interval), prometheusURL=state.prometheus_url)
    kubectl(state.kubeconfig, "create", "namespace", namespace)
    actor, _ = shipped_actor("traffic-city", "td3")
    kubectl(state.kubeconfig, "create", "configmap", "bench-actor", "-n", namespace, f"--from-file=actor.onnx={actor}")
    # In batches: one apply of a 1000-node fleet's 5000 objects outlasts kubectl's timeout.
    for start in range(0, len(documents), FLEET_OBJECTS_PER_APPLY):
        batch = documents[start : start + FLEET_OBJECTS_PER_APPLY]
        kubectl(state.kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(batch))
    # One twin per policy: each plays the gateways of its shard once.
    twins = [
        spawn_twin(
            namespace, state.directory, logs / f"twin-{mode}-{name}.log", state.kubeconfig,
            seed=args.seed, tick_seconds=args.tick, extra=["--log-level", "WARNING", "--policy", name],
        )
        for name in policy_names
    ]  # fmt: skip
    api = config.new_client_from_config(config_file=str(state.kubeconfig))
    observers: list[PrometheusObserver] = []

    def observer(url: str, selector: str) -> PrometheusObserver:
        """The operator's observer, kept to count its queries (the loop makes one per decision)."""
        observers.append(PrometheusObserver(url, selector))
        return observers[-1]

    # A loop per policy, as the operator runs a daemon per PlacementPolicy (each keeps its policy's state),
    # sharing one set of watch-based caches as the operator's daemons do.
    caches = ObjectCaches(api)
    loops = {
        name: DecisionLoop(
            api, write_policy=EAGER if mode == "eager" else DEFAULT_WRITES, observer_factory=observer, caches=caches
        )
        for name in policy_names
    }
    rows: list[dict[str, Any]] = []
    # The operator's loop runs in this process (its RSS includes the bench's own few MiB); the control
    # plane's and Prometheus's processes are the cluster's.
    watched = {name: pid for name, pid in state.pids.items() if name in USAGE_COMPONENTS}
    twin_pids = {
        "twin" if len(twins) == 1 else f"twin-{name}": t.pid for name, t in zip(policy_names, twins, strict=True)
    }
    usage = ProcessUsage({"operator": os.getpid(), **watched, **twin_pids})
    try:
        # Wait until Prometheus has scraped the twin over a whole decision interval.
        deadline = time.monotonic() + 120 + 3 * args.interval
        count_query = f'count({REQUESTS_TOTAL}{{namespace="{namespace}"}})'
        while time.monotonic() < deadline and not query(str(state.prometheus_url), count_query):
            time.sleep(1)
        time.sleep(args.interval)
        for interval, shard in ((i, name) for i in range(args.intervals + 1) for name in policy_names):
            if shard == policy_names[0]:
                started = time.monotonic()
            raw = json.loads(kubectl(state.kubeconfig, "get", "pp", shard, "-n", namespace, "-o", "json"))
            policy = {"metadata": raw["metadata"], "spec": raw["spec"], "status": raw.get("status") or {}}
            observers.clear()
            decision = loops[shard].run_once(policy)
            # The status the operator's handler writes after each decision: real writes, counted.
            status_started = time.monotonic()
            write_results(api, policy, decision)
            status_ms = 1000 * (time.monotonic() - status_started)
            status_writes = 1 + (
                0 if decision.degraded_reason or decision.dry_run
                else len(decision.edge_node_status) + len(decision.model_status)
            )  # fmt: skip
            written = decision.written
            moved, moved_percent = moves(decision)
            row: dict[str, Any] = {
                "interval": interval,
                "shard": shard,
                "degraded": decision.degraded_reason,
                "observe_ms": 1000 * decision.observe_seconds,
                "decide_ms": 1000 * decision.decide_seconds,
                "guard_ms": 1000 * decision.guard.seconds if decision.guard else 0.0,
                "counterfactual_ms": 1000 * decision.counterfactual_seconds,
                "plan_ms": 1000 * decision.plan_seconds,
                "decide_plan_ms": 1000 * (decision.decide_seconds + decision.plan_seconds),
                "decision_ms": 1000 * decision.decision_seconds,
                "reconcile_ms": 1000 * decision.reconcile_seconds,
                "reconcile_steps_ms": {step: round(1000 * t) for step, t in decision.written.step_seconds.items()},
                "writes": written.total,
                "apply": written.apply,
                "resize": written.resize,
                "delete": written.delete,
                "fallback": written.fallback,
                "status_writes": status_writes,
                "status_ms": status_ms,
                "moved": moved,
                "moved_percent": moved_percent,
                "unexplained_writes": max(0, written.total + status_writes - WRITES_PER_MOVE * moved),
                "cached": sum(len(m) for m in decision.placement.values()),
                "load1": os.getloadavg()[0],
                "scrape_s": _scrape_seconds(str(state.prometheus_url), namespace),
                "queries": sum(o.queries_sent for o in observers),
                "prometheus_ms": 1000 * sum(o.query_seconds for o in observers),
                "series": _head_series(str(state.prometheus_url)),
            }
            processes = usage.sample()
            row["usage"], row["operator_rss_mib"] = processes, processes["operator"]["rss_mib"]
            rows.append(row)
            shard_label = "" if len(policy_names) == 1 else f" {shard}"
            print(
                f"  {mode:8s} interval {interval}{shard_label}: decision {row['decision_ms']:6.0f} ms (observe "
                f"{row['observe_ms']:.0f}, decide {row['decide_ms']:.0f} of which guard {row['guard_ms']:.0f}, "
                f"plan {row['plan_ms']:.0f}), guard counterfactuals after it {row['counterfactual_ms']:.0f} ms, "
                "reconcile "
                f"{row['reconcile_ms']:6.0f} ms {row['reconcile_steps_ms']}, "
                f"{row['writes']:4d} writes ({row['apply']} apply, {row['resize']} "
                f"resize, {row['delete']} delete, {row['fallback']} fallback) + {row['status_writes']} status, "
                f"{row['moved']} moved ({row['moved_percent']:.1f} %), {row['cached']} cached, "
                f"load {row['load1']:.1f}, twin scrape {row['scrape_s'] or 0:.2f} s, "
                f"{row['queries']} queries ({row['prometheus_ms']:.0f} ms), {row['series'] or 0} series"
                + (f", DEGRADED {decision.degraded_reason}: {decision.message}" if decision.degraded_reason else "")
                + f"\n      {usage_line(processes)}",
                flush=True,
            )  # fmt: skip
            if shard == policy_names[-1]:
                # Every shard's decision and reconcile of this interval, one after the other: the work of
                # one operator process for the whole fleet (its daemons share the process and the cores).
                this = [r for r in rows if r["interval"] == interval]
                for r in this:
                    r["all_shards_ms"] = sum(x["decision_ms"] + x["reconcile_ms"] for x in this)
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    finally:
        for shard_loop in loops.values():
            shard_loop.close()
        caches.close()  # the watches
        for twin in twins:
            stop(twin)
        kubectl(state.kubeconfig, "delete", "namespace", namespace, "--wait=false")
    steady = [r for r in rows if r["interval"] >= args.warmup and not r["degraded"]]
    return {
        "mode": mode,
        "intervals": rows,
        "steady": {
            key: _summary([float(r[key]) for r in steady])
            for key in STEADY_FIGURES
            if all(r.get(key) is not None for r in steady)
        },
        "degraded_intervals": sum(1 for r in rows if r["degraded"]),
        "usage_steady": usage_summary([r["usage"] for r in steady]),
        "shards": len(policy_names),
    }


def usage_summary(samples: list[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per process: CPU % and RSS MiB (p50 and max) over the samples that have them."""
    names = sorted({name for sample in samples for name in sample})
    return {
        name: {
            figure: _summary([v for s in samples if (v := s.get(name, {}).get(figure)) is not None])
            for figure in ("cpu_percent", "rss_mib")
        }
        for name in names
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = REPRODUCE
    parser.add_argument("--edge-nodes", type=int, default=5, help="kwok edge nodes and EdgeNodes (default: 5)")
    parser.add_argument("--models", type=int, default=12, help="InferenceModels (default: 12)")
    parser.add_argument("--cameras", type=int, default=40, help="Cameras, spread over the nodes (default: 40)")
    parser.add_argument("--intervals", type=int, default=5, help="measured intervals after the first (default: 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="intervals left out of the steady figures (p50/max, --check): the first creates the fleet's "
        "objects, and from an empty edge spec.churnLimit fills the caches over a few more (default: 1)",
    )
    parser.add_argument("--interval", type=float, default=20.0, help="seconds between decisions (default: 20)")
    parser.add_argument("--tick", type=float, default=2.0, help="twin seconds per slot (default: 2)")
    parser.add_argument(
        "--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval and timeout (default: 5)"
    )
    parser.add_argument("--algorithm", default="td3", help="spec.algorithm (default: td3, the shipped actor)")
    parser.add_argument(
        "--guard",
        choices=("on", "off"),
        default="on",
        help="spec.guard.enabled: the counterfactual guard of a learned policy (default: on, the CRD's default)",
    )
    parser.add_argument(
        "--switching-horizon",
        type=float,
        default=10.0,
        metavar="SLOTS",
        help="the policy's spec.switchingHorizonSlots: a model moves only when its predicted gain over SLOTS "
        "planning slots exceeds its switching cost; 0 applies the policy's placement as it is (default: 10)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        metavar="N",
        help="N PlacementPolicies over N equal groups of the edge nodes (spec.edgeNodeSelector), each decided by its "
        "own loop and played by its own twin; per-shard figures, and all_shards_ms: every shard's decision and "
        "reconcile of one interval together (default: 1, one policy without a selector)",
    )
    parser.add_argument("--seed", type=int, default=0, help="twin seed, the same for both modes (default: 0)")
    parser.add_argument("--modes", default="eager,in-place", help="comma-separated: eager, in-place (default: both)")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster running at the end")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a steady figure misses its target (issue 15, meant for 100 x 20 x 400): "
        + "; ".join(f"{t.what} {t.statistic} <= {t.limit:g}{t.unit}" for t in TARGETS).replace("%", "%%"),
    )


def run(args: argparse.Namespace) -> int:  # pragma: no cover - needs a cluster
    if args.edge_nodes < 1 or args.models < 1 or args.cameras < 1 or args.intervals < 1:
        print("--edge-nodes, --models, --cameras and --intervals must be >= 1", file=sys.stderr)
        return 2
    if not 1 <= args.shards <= args.edge_nodes:
        print("--shards must be between 1 and --edge-nodes (a shard needs an edge node)", file=sys.stderr)
        return 2
    if args.switching_horizon < 0:
        print("--switching-horizon must be >= 0", file=sys.stderr)
        return 2
    if not 1 <= args.warmup <= args.intervals:
        print("--warmup must be between 1 and --intervals (the steady figures need an interval)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("eager", "in-place") for m in modes):
        print(f"--modes: eager and/or in-place, got {args.modes!r}", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the twin and the cluster are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    name = f"bench-operator-{args.edge_nodes}x{args.models}" + (f"-{args.shards}shards" if args.shards > 1 else "")
    work = Path(tempfile.mkdtemp(prefix="edgeaigc-bench-operator-"))
    nodes = work / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(nodes_file(args.edge_nodes, args.models, args.shards)))

    def progress(message: str) -> None:
        print(f"[cluster] {message}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "edge_nodes": args.edge_nodes,
        "models": args.models,
        "cameras": args.cameras,
        "interval_s": args.interval,
        "scrape_interval_s": args.scrape_interval,
        "algorithm": args.algorithm,
        "guard": args.guard,
        "switching_horizon_slots": args.switching_horizon,
        "warmup_intervals": args.warmup,
        "shards": args.shards,
        "modes": [],
    }
    print(
        f"{args.edge_nodes} edge nodes x {args.models} models x {args.cameras} cameras"
        + (f" in {args.shards} shards" if args.shards > 1 else "")
        + f", {args.algorithm}, "
        f"a decision every {args.interval:g} s, scrape every {args.scrape_interval:g} s (logs in {work})"
    )
    for mode in modes:
        # A cluster (and Prometheus) per mode: the other mode's series must not reach this one's queries.
        cluster_name = f"{name}-{mode}"
        try:
            state = up(
                cluster_name,
                nodes,
                progress=progress,
                timeout_s=120,
                prometheus=True,
                scrape_interval_s=args.scrape_interval,
            )
        except ClusterError as error:
            print(f"cannot start the local cluster: {error}", file=sys.stderr)
            return 1
        try:
            kubectl(state.kubeconfig, "apply", "--server-side", "-f", str(_repo_file("crds")))
            kubectl(state.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            results["modes"].append(run_mode(state, mode, args, work))
        finally:
            if not args.keep_cluster:
                down(cluster_name, progress=progress)
    print(f"\n{'mode':9s} {'':14s} {'p50':>9s} {'max':>9s}")
    for entry in results["modes"]:
        for key, label in (
            ("observe_ms", "observe ms"),
            ("prometheus_ms", "  Prometheus ms"),
            ("decide_ms", "decide ms"),
            ("guard_ms", "  of it guard ms"),
            ("counterfactual_ms", "counterfact. ms"),
            ("plan_ms", "plan ms"),
            ("decision_ms", "decision ms"),
            ("decide_plan_ms", "decide+plan ms"),
            ("reconcile_ms", "reconcile ms"),
            ("all_shards_ms", "all shards ms"),
            ("writes", "API writes"),
            ("status_writes", "status writes"),
            ("moved", "moved"),
            ("moved_percent", "moved %"),
            ("load1", "load average"),
            ("queries", "queries"),
            ("series", "series"),
            ("operator_rss_mib", "operator MiB"),
        ):
            if key not in entry["steady"]:
                continue
            figures = entry["steady"][key]
            print(f"{entry['mode']:9s} {label:14s} {figures['p50']:9.1f} {figures['max']:9.1f}")
        for name, figures in entry["usage_steady"].items():
            cpu, rss = figures["cpu_percent"], figures["rss_mib"]
            print(
                f"{entry['mode']:9s} {name[:14]:14s} CPU {cpu['p50']:5.0f} / {cpu['max']:4.0f} %, "
                f"RSS {rss['p50']:6.0f} / {rss['max']:6.0f} MiB"
            )
        first = entry["intervals"][0]
        print(
            f"{entry['mode']:9s} first interval: {first['writes']} writes, decision {first['decision_ms']:.0f} ms, "
            f"reconcile {first['reconcile_ms']:.0f} ms; {entry['degraded_intervals']} degraded intervals; "
            f"steady figures from interval {args.warmup}"
        )
    missed = False
    if args.check:
        for entry in results["modes"]:
            lines = check_targets(entry["steady"])
            entry["checks"] = lines
            missed = missed or any(line.startswith("MISSED") for line in lines)
            print("\n".join(f"{entry['mode']:9s} {line}" for line in lines))
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))
    return 1 if missed else 0
