"""``edgeaigc demo``: the whole loop on one machine, TD3 against a baseline on the same demand.

Brings up the local control plane with Prometheus, installs the CRDs and the traffic-city
samples, stores the shipped TD3 actor in a ConfigMap, then runs two phases of equal length on
the same demand (the traffic twin restarted with the same seed, edge placement cleared between
phases): the operator with ``td3``, then with a baseline. A live table shows what is cached
where and how the twin's hit rate follows; the end compares hit rate, response time and cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edgeaigc.cluster.kubectl import KubectlFailed, kubectl
from edgeaigc.cluster.local import ClusterError, ClusterState, up
from edgeaigc.cluster.processes import spawn_operator, spawn_twin, stop
from edgeaigc.cluster.prometheus import query
from edgeaigc.inference.metrics_contract import REQUESTS_TOTAL
from edgeaigc.policy.registry import shipped_actor

NAMESPACE = "traffic-city"
POLICY = "traffic-city"


def _repo_file(*parts: str) -> Path:
    """crds/ and examples/ of the source checkout the package is installed from (editable)."""
    path = Path(__file__).resolve().parents[1].joinpath(*parts)
    if not path.exists():
        raise ClusterError(f"{path} not found: run the demo from a source checkout (pip install -e .)")
    return path


def _scalar(url: str, promql: str, at: float | None = None) -> float | None:
    try:
        result = query(url, promql, at=at)
    except Exception:  # Prometheus hiccup: show a gap rather than stop the demo
        return None
    return float(result[0]["value"][1]) if result else None


def install_fleet(state: ClusterState, actor: Path, interval_s: int) -> None:
    # The demo owns its fleet: re-running it on a kept cluster takes the fields back from earlier patches.
    cluster = state.kubeconfig
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(_repo_file("crds")))
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(_repo_file("examples")))
    kubectl(cluster, "delete", "configmap", "traffic-city-actor", "-n", NAMESPACE, "--ignore-not-found")
    kubectl(cluster, "create", "configmap", "traffic-city-actor", "-n", NAMESPACE, f"--from-file=actor.onnx={actor}")
    patch = {"spec": {"intervalSeconds": interval_s, "prometheusURL": state.prometheus_url}}
    kubectl(cluster, "patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch))


def _set_algorithm(state: ClusterState, algorithm: str) -> None:
    # The guard off: a phase shows its algorithm alone, not a heuristic that took over from it.
    patch = {"spec": {"algorithm": algorithm, "guard": {"enabled": False}}}
    kubectl(state.kubeconfig, "patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch))
    # Start every phase from an empty edge: the phases must differ only by the algorithm.
    edge_inference = "app.kubernetes.io/component=edge-inference"
    kubectl(state.kubeconfig, "delete", "deploy,svc", "-n", NAMESPACE, "-l", edge_inference, "--wait=true")


def _table(state: ClusterState, algorithm: str, phase_left_s: float) -> Any:
    from rich.table import Table

    policy = json.loads(kubectl(state.kubeconfig, "get", "pp", POLICY, "-n", NAMESPACE, "-o", "json"))
    status = policy.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    url = str(state.prometheus_url)
    hit = _scalar(url, "edgeaigc_twin_hit_rate")
    hour = _scalar(url, "edgeaigc_twin_hour_of_day")
    degraded = conditions.get("Degraded", {})
    title = (
        f"{algorithm} — {phase_left_s:4.0f} s left — simulated hour {hour or 0:5.2f} — "
        f"edge hit rate (last slot) {'-' if hit is None else f'{hit:.0%}'}"
    )
    if degraded.get("status") == "True":
        title += f" — Degraded: {degraded.get('reason')}"
    table = Table(title=title)
    table.add_column("edge node")
    table.add_column("cached models")
    for entry in status.get("placement", []):
        table.add_row(entry["edgeNode"], ", ".join(entry["models"]) or "-")
    return table


def run_phase(state: ClusterState, algorithm: str, minutes: float, seed: int, logs: Path) -> dict[str, float | None]:
    """One phase: operator + twin for ``minutes``; return what the twin measured over it."""
    from rich.console import Console
    from rich.live import Live

    _set_algorithm(state, algorithm)
    twin = spawn_twin(
        NAMESPACE, state.directory, logs / f"twin-{algorithm}.log", state.kubeconfig, seed=seed, tick_seconds=2
    )
    operator = spawn_operator(NAMESPACE, logs / f"operator-{algorithm}.log", state.kubeconfig)
    started = time.time()
    end = started + minutes * 60
    console = Console()
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=1) as live:
                while time.time() < end:
                    live.update(_table(state, algorithm, end - time.time()))
                    time.sleep(2)
        else:
            while time.time() < end:
                console.print(_table(state, algorithm, end - time.time()))
                time.sleep(15)
    finally:
        stop(operator)
        stop(twin)
    window = max(int(time.time() - started), 10)
    url, at = str(state.prometheus_url), time.time()
    requests = f"sum(increase({REQUESTS_TOTAL}[{window}s]))"
    return {
        "hit_rate": _ratio(
            _scalar(url, f'sum(increase({REQUESTS_TOTAL}{{served_by="edge"}}[{window}s]))', at),
            _scalar(url, requests, at),
        ),
        "mean_response_time_s": _ratio(
            _scalar(url, f"sum(increase(edgeaigc_request_duration_seconds_sum[{window}s]))", at),
            _scalar(url, f"sum(increase(edgeaigc_request_duration_seconds_count[{window}s]))", at),
        ),
        "cost_dollars": _scalar(url, f"sum(increase(edgeaigc_twin_cost_dollars_total[{window}s]))", at),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each phase (default: 3)")
    parser.add_argument("--baseline", default="lru", choices=["lru", "lfu", "static_topk", "myopic", "random"])
    parser.add_argument("--interval", type=int, default=10, help="decision interval in seconds (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="demand seed, the same for both phases (default: 0)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running afterwards (not with --real)")
    parser.add_argument("--output", type=Path, default=None, help="also write the summary as JSON here")
    real = parser.add_argument_group(
        "real frames on real nodes (--real)",
        "a real edge node and a real cloud node, the chart, real model servers and camera processes instead "
        "of the traffic twin (needs root and the real-node packages: make deps)",
    )
    real.add_argument("--real", action="store_true", help="run the real system (cluster/real_demo.py)")
    real.add_argument("--fps", type=float, default=1.0, help="frames per second of each camera (default: 1)")
    real.add_argument(
        "--demo-models",
        type=Path,
        default=None,
        metavar="DIR",
        help="the demo model repository (default: built once into ~/.cache/edgeaigc/demo-models)",
    )
    real.add_argument(
        "--output-dir",
        type=Path,
        default=Path("real-demo"),
        metavar="DIR",
        help="where --real writes the fleet, the camera logs and summary.json (default: ./real-demo)",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.real:
        if args.minutes <= 0 or args.fps <= 0 or args.interval < 5:
            print("edgeaigc demo --real: --minutes and --fps must be positive, --interval at least 5", file=sys.stderr)
            return 2
        from edgeaigc.cluster import real_demo

        return real_demo.run(args)

    console = Console()
    actor, _ = shipped_actor("traffic-city", "td3")
    try:
        state = up(
            "demo",
            progress=lambda m: console.print(f"[dim]\\[cluster] {m}[/dim]"),
            prometheus=True,
            scrape_interval_s=2.0,
        )
        install_fleet(state, actor, args.interval)
        logs = state.directory / "logs"
        results = {}
        for algorithm in ("td3", args.baseline):
            results[algorithm] = run_phase(state, algorithm, args.minutes, args.seed, logs)
    except (ClusterError, KubectlFailed, OSError) as error:
        console.print(f"[red]edgeaigc demo: {error}[/red]")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.keep:
            from edgeaigc.cluster.local import down

            down("demo", progress=lambda m: console.print(f"[dim]\\[cluster] {m}[/dim]"))
    summary = Table(title=f"Same demand (seed {args.seed}), {args.minutes:g} min each")
    for column in ("policy", "edge hit rate", "mean response time", "twin cost ($)"):
        summary.add_column(column)
    for algorithm, figures in results.items():
        hit, rt, cost = figures["hit_rate"], figures["mean_response_time_s"], figures["cost_dollars"]
        summary.add_row(
            algorithm,
            "-" if hit is None else f"{hit:.1%}",
            "-" if rt is None else f"{rt * 1000:.0f} ms",
            "-" if cost is None else f"{cost:.4f}",
        )
    console.print(summary)
    if args.output is not None:
        args.output.write_text(json.dumps({"seed": args.seed, "minutes": args.minutes, "policies": results}, indent=2))
    if all(figures["hit_rate"] is None for figures in results.values()):
        console.print("[red]edgeaigc demo: no requests were measured; see the logs (--keep keeps them)[/red]")
        return 1
    return 0
