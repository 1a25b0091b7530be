"""``edgeaigc bench-chaos``: a chaos soak of the whole system on a real node, under camera traffic.

The test bed of :mod:`edgeaigc.cluster.real_stack` (real kubelet node, the chart, the fleet of
``examples/real-node/``), an ``edgeaigc camera`` process streaming generated road scenes through
the real gateway to the real YOLOX-Nano replica, and then, for ``--duration``, a fault every
``--mean-gap`` seconds (exponentially distributed, seeded), every kind once in a seeded random order
before any comes again, from:

- ``operator``: SIGKILL of every process of the leading operator replica's container (the standby
  takes over, or the restarted one leads again);
- ``gateway``: the same for the gateway's container;
- ``model-pod``: the detector's pod on the real node force-deleted (its Deployment makes another);
- ``apiserver``: kube-apiserver SIGKILLed and started again ``--outage`` seconds later;
- ``prometheus``: the same for Prometheus.

The first fault comes no earlier than two decision intervals after the detector first answered (the
baseline), each next one only once the previous one has recovered (bounded by ``--recovery-timeout``) and
two decision intervals plus ten frames have passed since (the window its error rate is judged in).
Measured: each fault's recovery time (the component healthy again) and the camera's outage
after it (from the fault to the next answered frame), the share of frames answered, the
longest run of failed frames. Checked, every few seconds: the detector's placement on the real
node is never removed (a fault must not delete a working placement); the routing table is always
valid (the operator's ConfigMap parsed with the gateway's own parser, and the table the gateway
holds, from its ``/metrics``); after each fault: the camera's error rate back to the baseline
within two decision intervals of the recovery (:mod:`edgeaigc.cluster.chaos_invariants`); at the
end: every component healthy, the operator deciding again, the camera answered, nothing left over
(one Deployment per placed model). Exit 0 when every check holds, 1 when one fails.
``--from-run DIR`` judges a finished run's faults and frames again, without a cluster.

Writes ``chaos.json`` (every fault and sample), ``frames.jsonl`` (the camera's frames) and
``chaos.png`` (frames answered over time with the faults marked) to ``--output``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeaigc.cluster.chaos_invariants import (
    Baseline,
    RecoveryJudgement,
    TableWatch,
    baseline_error_share,
    decision_interval_s,
    judge_gateway_metrics,
    judge_recoveries,
    judge_routing_configmap,
    recoveries_within_baseline,
    tolerance_frames,
)
from edgeaigc.cluster.local import ClusterError, kill_component, restart_component
from edgeaigc.cluster.real_stack import DETECTOR, NODE, RELEASE, RealStack, pod_ready, real_stack, wait_until
from edgeaigc.cluster.realnode import container_cgroup_files
from edgeaigc.policy.resources import object_name

FAULT_KINDS = ("operator", "gateway", "model-pod", "apiserver", "prometheus")
SHARED_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yolox_nano.onnx"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
POLICY = "real-node"
#: Frames the error rate after a recovery is judged on, at least (the next fault waits for them).
JUDGED_FRAMES = 10
RECOVERY_CHECK = "error rate back to baseline within two intervals of each recovery"


@dataclasses.dataclass
class Fault:
    kind: str
    target: str
    at: float
    """Wall-clock time the fault was injected."""
    recovered_s: float | None = None
    """Seconds until the component was healthy again (None: not within the recovery timeout)."""
    camera_outage_s: float = 0.0
    """Seconds from the fault to the camera's next answered frame, when frames failed meanwhile."""
    failed_frames: int = 0


@dataclasses.dataclass
class Watch:
    """What the watcher saw every few seconds: is the detector still placed on the real node?"""

    samples: int = 0
    unreachable: int = 0
    placement_missing: list[float] = dataclasses.field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=1800, metavar="S", help="seconds of faults (default: 1800)")
    parser.add_argument(
        "--mean-gap",
        type=float,
        default=60,
        metavar="S",
        help="mean seconds between faults, and at least two decision intervals plus ten frames after the previous "
        "recovery (default: 60)",
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds to draw from (default: all: {','.join(FAULT_KINDS)})",
    )
    parser.add_argument(
        "--max-faults", type=int, default=0, metavar="N", help="stop after N faults (default: 0, no limit)"
    )
    parser.add_argument(
        "--outage", type=float, default=15, metavar="S", help="seconds the API server or Prometheus stays down"
    )
    parser.add_argument(
        "--recovery-timeout", type=float, default=240, metavar="S", help="longest wait for a fault's recovery"
    )
    parser.add_argument("--fps", type=float, default=1.0, help="camera frames per second (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule (default: 0)")
    parser.add_argument(
        "--model",
        type=Path,
        default=SHARED_MODEL,
        help="the YOLOX-Nano ONNX file the detector replicas serve (default: ../shared/data/yolox_nano.onnx)",
    )
    parser.add_argument("--output", type=Path, default=Path("chaos-out"), help="directory of the results")
    parser.add_argument(
        "--from-run",
        type=Path,
        metavar="DIR",
        help="judge a finished run again from its chaos.json and frames.jsonl, without a cluster (writes nothing)",
    )


def container_pids(pod: dict[str, Any]) -> list[int]:
    """Processes of a pod's containers on the real node, from their cgroups (cgroup v1 cpu controller)."""
    ids = [s["containerID"].removeprefix("containerd://") for s in pod["status"].get("containerStatuses") or []]
    pids: list[int] = []
    for container_id in ids:
        for procs in container_cgroup_files(NODE, container_id, "cpu", "cgroup.procs"):
            pids += [int(line) for line in procs.read_text().split()]
    return pids


def _restarts(pod: dict[str, Any]) -> int:
    return sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or [])


def _component_pod(stack: RealStack, component: str) -> dict[str, Any]:
    pods = stack.pods(f"{INSTANCE},app.kubernetes.io/component={component}")
    if not pods:
        raise ClusterError(f"no {component} pod")
    return pods[0]


def _leader_pod(stack: RealStack) -> dict[str, Any]:
    """The operator pod named in the leader-election Lease (the chart's Lease is named after the release)."""
    holder = stack.kubectl(
        "get", "lease", RELEASE, "-n", stack.namespace, "-o", "jsonpath={.spec.holderIdentity}", timeout_s=20
    ).strip()
    for pod in stack.pods(f"{INSTANCE},app.kubernetes.io/component=operator"):
        if pod["metadata"]["name"] == holder:
            return pod
    raise ClusterError(f"no operator pod holds the Lease {RELEASE!r} (holder: {holder or 'none'})")


def _detector_pods(stack: RealStack) -> list[dict[str, Any]]:
    return stack.pods(f"edgeaigc.io/model={DETECTOR},edgeaigc.io/edge-node={NODE}")


def _detector_ready(stack: RealStack) -> bool:
    ready = stack.kubectl(
        "get", "deployment", object_name(DETECTOR, NODE), "-n", stack.namespace, "-o",
        "jsonpath={.status.readyReplicas}", timeout_s=20,
    )  # fmt: skip
    return ready.strip() == "1"


def _last_decision(stack: RealStack) -> str:
    return stack.kubectl(
        "get", "pp", POLICY, "-n", stack.namespace, "-o", "jsonpath={.status.lastDecisionTime}", timeout_s=20
    ).strip()


def inject(stack: RealStack, kind: str, outage_s: float, timeout_s: float) -> Fault:
    """Inject one fault and wait for its recovery (bounded)."""
    started = time.time()
    if kind in ("operator", "gateway"):
        # The operator runs as two replicas with leader election: the one to kill is the leader.
        pod = _leader_pod(stack) if kind == "operator" else _component_pod(stack, kind)
        before, decided = _restarts(pod), _last_decision(stack)
        for pid in container_pids(pod):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        fault = Fault(kind, pod["metadata"]["name"], started)
        killed = pod["metadata"]["name"]

        def recovered() -> bool:
            if kind == "gateway":
                current = _component_pod(stack, kind)
                return _restarts(current) > before and pod_ready(current)
            # Back when a leader (the standby, or the killed one restarted) has decided again and every
            # replica is ready again (the killed one restarted as leader or standby).
            pods = stack.pods(f"{INSTANCE},app.kubernetes.io/component=operator")
            restarted = any(p["metadata"]["name"] == killed and _restarts(p) > before for p in pods)
            return restarted and all(pod_ready(p) for p in pods) and _last_decision(stack) != decided

    elif kind == "model-pod":
        pods = _detector_pods(stack)
        if not pods:
            raise ClusterError(f"no pod of {DETECTOR} on {NODE} to delete")
        name = pods[0]["metadata"]["name"]
        stack.kubectl("delete", "pod", name, "-n", stack.namespace, "--grace-period=0", "--force", "--wait=false")
        fault = Fault(kind, name, started)

        def recovered() -> bool:
            return _detector_ready(stack) and all(p["metadata"]["name"] != name for p in _detector_pods(stack))

    elif kind in ("apiserver", "prometheus"):
        kill_component(stack.state, kind)
        time.sleep(outage_s)
        restart_component(stack.state, kind, timeout_s=timeout_s)
        fault = Fault(kind, kind, started)

        def recovered() -> bool:
            return True  # restart_component waited for it to be ready

    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    with contextlib.suppress(ClusterError):
        wait_until(recovered, timeout_s - (time.time() - started), f"recovery from {kind}", poll_s=1.0)
        fault.recovered_s = round(time.time() - started, 1)
    return fault


def watch_placement(stack: RealStack, stop: threading.Event, watch: Watch, period_s: float = 3.0) -> None:
    """Sample, until ``stop``, whether the detector's Deployment on the real node still exists."""
    deployment = object_name(DETECTOR, NODE)
    while not stop.wait(period_s):
        watch.samples += 1
        try:
            stack.kubectl("get", "deployment", deployment, "-n", stack.namespace, "-o", "name", timeout_s=10)
        except ClusterError as error:
            if "NotFound" in str(error):
                watch.placement_missing.append(time.time())
            else:
                watch.unreachable += 1  # the API server is down (a fault of its own)
        except (subprocess.TimeoutExpired, OSError):
            watch.unreachable += 1


def watch_routing_table(
    stack: RealStack, gateway_url: str, stop: threading.Event, watch: TableWatch, period_s: float = 3.0
) -> None:
    """Sample, until ``stop``, the operator's routing-table ConfigMap and the table the gateway holds."""
    name = object_name(POLICY, "routing")
    while not stop.wait(period_s):
        watch.samples += 1
        at = time.time()
        try:
            output = stack.kubectl("get", "configmap", name, "-n", stack.namespace, "-o", "json", timeout_s=10)
            watch.record(at, "configmap", *judge_routing_configmap(json.loads(output)))
        except ClusterError as error:
            if "NotFound" in str(error):
                watch.record(at, "configmap", *judge_routing_configmap(None))
            else:
                watch.configmap_unreachable += 1  # the API server is down (a fault of its own)
        except (subprocess.TimeoutExpired, OSError):
            watch.configmap_unreachable += 1
        except json.JSONDecodeError as error:
            watch.record(at, "configmap", None, f"kubectl's output is not JSON: {error}")
        sample_gateway_table(gateway_url, watch)


def sample_gateway_table(gateway_url: str, watch: TableWatch) -> None:
    """One sample of the routing table the gateway at ``gateway_url`` holds, from its ``/metrics``."""
    at = time.time()
    try:
        with urllib.request.urlopen(f"{gateway_url}/metrics", timeout=5) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        watch.gateway_unreachable += 1  # the gateway is restarting (a fault of its own)
        return
    watch.record(at, "gateway", *judge_gateway_metrics(text))


def read_frames(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    frames = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            frames.append(json.loads(line))
    return frames


def camera_outages(faults: list[Fault], frames: list[dict[str, Any]]) -> None:
    """Fill each fault's camera figures from the frames sent between it and the next fault: the failed
    frames, and the outage from the fault to the answered frame that ended the first run of failures
    (a pod being replaced may answer a few frames before its successor is ready, then fail)."""
    for index, fault in enumerate(faults):
        until = faults[index + 1].at if index + 1 < len(faults) else math.inf
        window = [frame for frame in frames if fault.at <= frame["time"] < until]
        fault.failed_frames = sum(not frame["ok"] for frame in window)
        first_failure = next((i for i, frame in enumerate(window) if not frame["ok"]), None)
        if first_failure is None:
            fault.camera_outage_s = 0.0
            continue
        recovered = next((frame for frame in window[first_failure:] if frame["ok"]), None)
        end = recovered["time"] if recovered else window[-1]["time"]
        fault.camera_outage_s = round(end - fault.at, 1)


def longest_failure_run(frames: list[dict[str, Any]]) -> tuple[int, float]:
    """The longest run of consecutive failed frames: (frames, seconds)."""
    best, best_s, start, run = 0, 0.0, 0.0, 0
    for frame in frames:
        if frame["ok"]:
            run = 0
            continue
        if run == 0:
            start = frame["time"]
        run += 1
        if run > best:
            best, best_s = run, frame["time"] - start
    return best, round(best_s, 1)


def final_checks(stack: RealStack, started_decision: str) -> dict[str, bool]:
    """Every component healthy, the operator deciding, one Deployment per placed model."""
    checks: dict[str, bool] = {}
    for component in ("operator", "gateway", "cloud-server"):
        try:
            checks[f"{component} ready"] = all(
                pod_ready(p) for p in stack.pods(f"{INSTANCE},app.kubernetes.io/component={component}")
            )
        except ClusterError:
            checks[f"{component} ready"] = False
    try:
        decided = wait_until(lambda: _last_decision(stack) != started_decision, 90, "a decision after the soak")
        checks["operator decides after the soak"] = bool(decided)
    except ClusterError:
        checks["operator decides after the soak"] = False
    try:
        checks[f"{DETECTOR} ready on {NODE}"] = _detector_ready(stack)
        status = json.loads(stack.kubectl("get", "pp", POLICY, "-n", stack.namespace, "-o", "json"))["status"]
        placed = {(entry["edgeNode"], model) for entry in status.get("placement", []) for model in entry["models"]}
        deployments = json.loads(
            stack.kubectl("get", "deployments", "-n", stack.namespace, "-l", "edgeaigc.io/model", "-o", "json")
        )["items"]
        edge = {
            (d["metadata"]["labels"].get("edgeaigc.io/edge-node"), d["metadata"]["labels"]["edgeaigc.io/model"])
            for d in deployments
            if d["metadata"]["labels"].get("edgeaigc.io/edge-node")
        }
        checks["one edge Deployment per placed model, nothing left over"] = edge == placed
    except (ClusterError, KeyError, json.JSONDecodeError):
        checks.setdefault(f"{DETECTOR} ready on {NODE}", False)
        checks["one edge Deployment per placed model, nothing left over"] = False
    return checks


def plot(frames: list[dict[str, Any]], faults: list[Fault], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not frames:
        return
    origin = frames[0]["time"]
    figure, axis = plt.subplots(figsize=(11, 3.5))
    ok = [(f["time"] - origin, f.get("latency_ms", 0) / 1000) for f in frames if f["ok"]]
    failed = [f["time"] - origin for f in frames if not f["ok"]]
    if ok:
        axis.scatter(
            [t for t, _ in ok], [latency for _, latency in ok], s=6, color="tab:blue", label="answered (latency, s)"
        )
    axis.scatter(failed, [0] * len(failed), s=10, marker="x", color="tab:red", label="failed frame")
    colours = dict(zip(FAULT_KINDS, ("tab:orange", "tab:purple", "tab:green", "tab:red", "tab:brown"), strict=True))
    for kind in FAULT_KINDS:
        times = [fault.at - origin for fault in faults if fault.kind == kind]
        for index, at in enumerate(times):
            axis.axvline(at, color=colours[kind], linestyle="--", linewidth=1, label=kind if index == 0 else None)
    axis.set_xlabel("seconds since the camera started")
    axis.set_ylabel("latency (s)")
    axis.set_title("chaos soak on the real node: every frame, every fault")
    axis.legend(loc="upper right", fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def spawn_camera(stack: RealStack, frames: int, fps: float, frame_log: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "edgeaigc.inference.pipeline.camera", "--generated",
        "--gateway", stack.gateway_service_url(), "--camera-id", "camera-0", "--detector-model", DETECTOR,
        "--fps", f"{fps:g}", "--frames", str(frames), "--timeout", "10", "--frame-log", str(frame_log),
        "--no-progress", "--json",
    ]  # fmt: skip
    if stack.camera_token_file is not None:  # the gateway authenticates cameras
        command += ["--token-file", str(stack.camera_token_file)]
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


def judge_error_rate(
    faults: list[Fault], frames: list[dict[str, Any]], soak_start: float, interval_s: float, fps: float
) -> tuple[Baseline, int, list[RecoveryJudgement]]:
    """The error-rate check's inputs and verdicts: the baseline (the soak's frames before its first fault),
    the tolerance (:func:`tolerance_frames`) and each fault's window after its recovery (the last one's runs
    to the camera's last frame)."""
    baseline = baseline_error_share(frames, soak_start, faults[0].at if faults else math.inf)
    tolerance = tolerance_frames(fps)
    end = frames[-1]["time"] + 1.0 if frames else soak_start
    return baseline, tolerance, judge_recoveries(faults, frames, baseline, interval_s, tolerance, end)


def error_rate_figures(
    baseline: Baseline, tolerance: int, interval_s: float, judgements: list[RecoveryJudgement]
) -> dict[str, Any]:
    """The error-rate check as ``chaos.json`` keeps it."""
    return {
        "decision_interval_s": interval_s,
        "baseline": {"frames": baseline.frames, "failed": baseline.failed, "share": round(baseline.share, 4)},
        "tolerance_frames": tolerance,
        "after_recovery": [
            dataclasses.asdict(judgement) | {"error_rate": judgement.error_rate} for judgement in judgements
        ],
    }


def soak(stack: RealStack, args: argparse.Namespace, kinds: list[str], progress: Callable[[str], None]) -> int:
    out: Path = args.output
    rng = random.Random(args.seed)
    warmup_s = 420.0
    interval_s = decision_interval_s()
    baseline_s = 2 * interval_s  # frames before the first fault: the error rate to come back to
    settle_s = 2 * interval_s + JUDGED_FRAMES / args.fps  # after a recovery: two intervals, then judged frames
    frames_total = math.ceil((warmup_s + args.duration + args.recovery_timeout + settle_s + 120) * args.fps)
    frame_log = out / "frames.jsonl"
    camera = spawn_camera(stack, frames_total, args.fps, frame_log, out / "camera.log")
    faults: list[Fault] = []
    pending: list[str] = []
    watch, table_watch, stop = Watch(), TableWatch(), threading.Event()
    watchers = [
        threading.Thread(target=watch_placement, args=(stack, stop, watch), daemon=True),
        threading.Thread(
            target=watch_routing_table, args=(stack, stack.gateway_service_url(), stop, table_watch), daemon=True
        ),
    ]
    try:
        progress("waiting for the detector to answer at the edge (the operator places it from the camera's demand)")
        wait_until(
            lambda: _detector_ready(stack) and any(f["ok"] for f in read_frames(frame_log)[-3:]),
            warmup_s,
            f"{DETECTOR} answering on {NODE}",
        )
        decided = _last_decision(stack)
        for watcher in watchers:
            watcher.start()
        soak_start = time.time()
        earliest = soak_start + baseline_s
        progress(
            f"soak: {args.duration:.0f} s of faults ({', '.join(kinds)}), one every ~{args.mean_gap:.0f} s, "
            f"none within {settle_s:.0f} s of the previous recovery (decision interval {interval_s:g} s)"
        )
        while time.time() - soak_start < args.duration and not (args.max_faults and len(faults) >= args.max_faults):
            gap = max(rng.expovariate(1 / args.mean_gap), earliest - time.time())
            time.sleep(min(gap, max(0.0, args.duration - (time.time() - soak_start))))
            if time.time() - soak_start >= args.duration:
                break
            if not pending:  # every kind once, in a seeded random order, before any comes again
                pending = rng.sample(kinds, len(kinds))
            kind = pending.pop()
            fault = inject(stack, kind, args.outage, args.recovery_timeout)
            faults.append(fault)
            earliest = time.time() + settle_s
            recovered = f"recovered in {fault.recovered_s:.1f} s" if fault.recovered_s is not None else "NOT recovered"
            progress(f"[{time.time() - soak_start:6.0f} s] {kind} ({fault.target}): {recovered}")
        time.sleep(max(30.0, earliest - time.time()))  # the camera's frames after the last fault
        stop.set()
        checks = final_checks(stack, decided)
    finally:
        stop.set()
        camera.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            camera.wait(15)
    frames = read_frames(frame_log)
    soak_frames = [f for f in frames if f["time"] >= soak_start]
    camera_outages(faults, frames)
    baseline, tolerance, judgements = judge_error_rate(faults, frames, soak_start, interval_s, args.fps)
    answered = sum(f["ok"] for f in soak_frames)
    run_frames, run_s = longest_failure_run(soak_frames)
    checks["every fault recovered"] = all(fault.recovered_s is not None for fault in faults)
    checks["the placement was never removed"] = not watch.placement_missing
    checks["the routing table was always valid"] = table_watch.valid_throughout()
    checks[RECOVERY_CHECK] = recoveries_within_baseline(judgements)
    checks["the camera was answered at the end"] = any(f["ok"] for f in frames[-10:])
    summary = {
        "duration_s": args.duration,
        "seed": args.seed,
        "fps": args.fps,
        "soak_start": soak_start,
        "faults": [dataclasses.asdict(fault) for fault in faults],
        "frames": len(soak_frames),
        "answered": answered,
        "answered_share": round(answered / len(soak_frames), 4) if soak_frames else None,
        "longest_failure_run": {"frames": run_frames, "seconds": run_s},
        "watch": dataclasses.asdict(watch),
        "routing_table": dataclasses.asdict(table_watch),
        "error_rate": error_rate_figures(baseline, tolerance, interval_s, judgements),
        "checks": checks,
        "load_average": os.getloadavg(),
    }
    (out / "chaos.json").write_text(json.dumps(summary, indent=2))
    plot(frames, faults, out / "chaos.png")
    print_report(summary)
    return 0 if all(checks.values()) else 1


def rejudge(run_directory: Path) -> int:
    """``--from-run``: a finished run's error-rate check judged again from its chaos.json and frames.jsonl.

    A run from before the check kept no ``soak_start``: its baseline starts at the first answered frame.
    """
    try:
        summary = json.loads((run_directory / "chaos.json").read_text())
        faults = [Fault(**fault) for fault in summary["faults"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        print(f"edgeaigc bench-chaos: {run_directory} holds no readable chaos.json: {error}", file=sys.stderr)
        return 2
    frames = read_frames(run_directory / "frames.jsonl")
    if not frames:
        print(f"edgeaigc bench-chaos: {run_directory} holds no frames.jsonl with frames", file=sys.stderr)
        return 2
    soak_start = summary.get("soak_start") or next((f["time"] for f in frames if f["ok"]), frames[0]["time"])
    interval_s = decision_interval_s()
    baseline, tolerance, judgements = judge_error_rate(faults, frames, soak_start, interval_s, summary.get("fps", 1.0))
    summary["error_rate"] = error_rate_figures(baseline, tolerance, interval_s, judgements)
    summary["checks"][RECOVERY_CHECK] = recoveries_within_baseline(judgements)
    print_report(summary)
    return 0 if all(summary["checks"].values()) else 1


def print_report(summary: dict[str, Any]) -> None:
    print(f"\n{'fault':<11} {'target':<44} {'recovered (s)':>13} {'camera outage (s)':>18} {'failed frames':>13}")
    for fault in summary["faults"]:
        recovered = "-" if fault["recovered_s"] is None else f"{fault['recovered_s']:.1f}"
        print(
            f"{fault['kind']:<11} {fault['target'][:44]:<44} {recovered:>13} {fault['camera_outage_s']:>18.1f} "
            f"{fault['failed_frames']:>13}"
        )
    by_kind: dict[str, list[float]] = {}
    for fault in summary["faults"]:
        if fault["recovered_s"] is not None:
            by_kind.setdefault(fault["kind"], []).append(fault["recovered_s"])
    for kind, times in sorted(by_kind.items()):
        print(f"  {kind}: {len(times)} faults, recovery max {max(times):.1f} s, mean {sum(times) / len(times):.1f} s")
    share = summary["answered_share"]
    print(
        f"frames during the soak: {summary['frames']}, answered {summary['answered']}"
        + (f" ({share:.1%})" if share is not None else "")
        + f"; longest failed run {summary['longest_failure_run']['frames']} frames "
        f"({summary['longest_failure_run']['seconds']} s)"
    )
    print_error_rate(summary.get("error_rate"))
    table = summary.get("routing_table")
    if table is not None:
        generations = ", ".join(
            f"{source} {low}-{high}" for source, (low, high) in sorted(table["generations"].items())
        )
        print(
            f"routing table: {table['samples']} samples, {table['invalid']} invalid, unreachable: "
            f"ConfigMap {table['configmap_unreachable']}, gateway {table['gateway_unreachable']}; "
            f"generations {generations or '-'}"
        )
        for error in table["errors"]:
            print(f"  invalid ({error['source']}): {error['error']}")
    for check, passed in summary["checks"].items():
        print(f"  [{'ok' if passed else 'FAILED'}] {check}")


def print_error_rate(figures: dict[str, Any] | None) -> None:
    if figures is None:
        return
    baseline = figures["baseline"]
    interval = figures["decision_interval_s"]
    print(
        f"error rate: baseline {baseline['failed']}/{baseline['frames']} frames failed before the first fault "
        f"({baseline['share']:.1%}); after each recovery + 2 x {interval:g} s, allowed: the baseline share + "
        f"{figures['tolerance_frames']} frame(s)"
    )
    print(f"  {'fault':<11} {'failed/frames':>13} {'error rate':>10} {'allowed':>8}  verdict")
    for judged in figures["after_recovery"]:
        rate = "-" if judged["error_rate"] is None else f"{judged['error_rate']:.1%}"
        verdict = {True: "ok", False: "FAILED", None: "not judged"}[judged["ok"]]
        counts = f"{judged['failed']}/{judged['frames']}"
        print(f"  {judged['kind']:<11} {counts:>13} {rate:>10} {judged['allowed_failed']:>8.1f}  {verdict}")


def run(args: argparse.Namespace) -> int:
    if args.from_run is not None:
        return rejudge(args.from_run)
    kinds = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown or not kinds:
        print(f"edgeaigc bench-chaos: unknown fault kinds {unknown} (known: {', '.join(FAULT_KINDS)})", file=sys.stderr)
        return 2
    if args.duration <= 0 or args.mean_gap <= 0 or args.outage < 0 or args.fps <= 0:
        print("edgeaigc bench-chaos: --duration, --mean-gap and --fps must be positive", file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(
            f"edgeaigc bench-chaos: no model at {args.model}: give --model PATH (a YOLOX-Nano ONNX file)",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        print(f"[chaos] {message}", flush=True)

    try:
        with real_stack(args.model, progress=progress, workdir=args.output / "stack") as stack:
            return soak(stack, args, kinds, progress)
    except ClusterError as error:
        print(f"edgeaigc bench-chaos: {error}", file=sys.stderr)
        return 1
