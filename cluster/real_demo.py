"""``edgeaigc demo --real``: the whole system on real nodes, real frames, TD3 against a baseline.

The local cluster with a real edge node (``pi-real-0``, 1 CPU) and a real cloud node
(``cloud-real-0``) in place of the fake one; the chart's gateway on the edge node (camera tokens,
mutual TLS to the cloud), the operator on the cloud node; real model servers the operator places
(edge replicas on the Pi under the CPU limits of its plan, a cloud replica per model where misses
go); Prometheus scraping the real gateway; and ``edgeaigc camera`` processes streaming frames
through detection → classification → flow:

- with ``../shared/data``: ``camera-0`` plays the real motorway clip through YOLOX-Nano;
- always: a camera plays a generated road scene through the project's demo detector and
  classifier (``edgeaigc build-demo-models``, built once and cached).

The operator decides from the gateway's metrics only. Two phases of equal length run the same
recorded input (the same clip and scene seeds from their first frame, the edge emptied between
phases): the learned policy, then a baseline. A live table shows what is cached where, the hit
rate and the latency; the end compares them, with the vehicle counts each phase produced, which
must match (placement must not change results). Everything is written to ``--output``.

What this test bed is not: the "cloud" is another cgroup of the same 2-core machine, so a miss
pays no WAN round trip (the kernel here has no netem to add one) — only the cloud replica's own
CPU share. The fleet says so (``rttMs``), and :mod:`.real_demo` measures each model's work per
request on this machine before it starts, so the operator plans with this bed's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeaigc.cluster import network
from edgeaigc.cluster.bench_quota import DEMO_MODELS_CACHE, example_feed
from edgeaigc.cluster.local import ClusterError
from edgeaigc.cluster.prometheus import query
from edgeaigc.cluster.real_stack import (
    NODE,
    RealStack,
    install_chart,
    make_secrets,
    pod_ready,
    real_cluster,
    repo_path,
    wait_until,
)
from edgeaigc.cluster.replica_metrics import ReplicaMeter
from edgeaigc.cluster.sim_to_real import Bed, Sample, plot, print_report, report, routing_tables
from edgeaigc.inference.gateway.metrics import ROUTING_TABLE_GENERATION
from edgeaigc.inference.metrics_contract import (
    CAMERA_REQUEST_BYTES_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUEST_LATENCY_BUCKETS,
    REQUEST_SECONDS_TOTAL,
    REQUESTS_TOTAL,
)
from edgeaigc.policy.resources import (
    COMPONENT_CLOUD_INFERENCE,
    COMPONENT_EDGE_INFERENCE,
    LABEL_COMPONENT,
    ROUTING_TABLE_KEY,
    object_name,
)

ProgressFn = Callable[[str], None]

NAMESPACE = "real-demo"
POLICY = "real-demo"
CLOUD_NODE = "cloud-real-0"
#: What the cloud replicas get each (operator.cloudReplicaResources in real-demo-values.yaml); the
#: fleet's cloud.coreSpeed says the same to the system model.
CLOUD_REPLICA_CORES = 0.5
#: CPU of the Pi the models may share (1 CPU allocatable; the gateway keeps the rest).
EDGE_CORES = 0.8
#: The shipped actor the learned phase runs (the chart's actors ConfigMap).
ACTOR_KEY = "traffic-city-td3.onnx"
ACTORS_CONFIGMAP = "edgeaigc-actors"
#: The gateway's upload rate per camera and the generation of the routing table it holds (inference/gateway/metrics.py).
UPLINK_RATE = "edgeaigc_gateway_uplink_rate_bytes_per_second"
#: A gateway series (the model servers export the same names without these labels).
GATEWAY = 'edge_node!=""'
#: The model replicas, edge and cloud (cluster/replica_metrics.py reads their histograms and CPU).
REPLICAS = f"{LABEL_COMPONENT} in ({COMPONENT_EDGE_INFERENCE},{COMPONENT_CLOUD_INFERENCE})"


@dataclass(frozen=True)
class DemoModel:
    """A model of the demo fleet: its name at the gateway (the InferenceModel), stage and ONNX file."""

    name: str
    stage: str
    file: Path
    daypart: str = "any"


@dataclass(frozen=True)
class DemoCamera:
    """A camera process: its name (the Camera resource and its token) and ``edgeaigc camera`` arguments."""

    name: str
    source: str
    arguments: tuple[str, ...]
    models: tuple[str, ...] = ()
    """The models it sends a request to per frame (whose bytes go through its uplink share)."""


@dataclass
class PhaseResult:
    """What one phase measured."""

    algorithm: str
    seconds: float = 0.0
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Camera -> its ``edgeaigc camera --json`` summary."""
    per_model: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Model -> requests, edge hit rate, mean latency at the gateway (Prometheus)."""
    placements: list[list[str]] = field(default_factory=list)
    """The models cached on the Pi, as the live table saw them."""
    samples: list[Sample] = field(default_factory=list)
    """One per decision interval: cache, CPU limits, what the gateway served (for sim-to-real)."""

    def hit_rate(self) -> float | None:
        edge = sum(m["edge_requests"] or 0.0 for m in self.per_model.values())
        total = sum(m["requests"] or 0.0 for m in self.per_model.values())
        return edge / total if total else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "seconds": round(self.seconds, 1),
            "edge_hit_rate": self.hit_rate(),
            "per_model": self.per_model,
            "cameras": self.cameras,
            "placements_seen": self.placements,
            "samples": [sample.to_dict() for sample in self.samples],
        }


# -- the inputs: models, their work on this machine, the cameras --------------------------------------


def shared_data() -> Path | None:
    """``../shared/data`` beside the checkout (or ``$EDGEAIGC_SHARED_DATA``) when it holds the clip and YOLOX-Nano."""
    given = os.environ.get("EDGEAIGC_SHARED_DATA")
    directory = Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "data"
    needed = ("yolox_nano.onnx", "highway_cctv_video02.avi")
    return directory if all((directory / name).is_file() for name in needed) else None


def demo_models(directory: Path | None, progress: ProgressFn) -> Path:
    """The demo model repository: ``directory``, or the cache, built there once if it is not complete."""
    target = directory or DEMO_MODELS_CACHE
    needed = [target / "det-demo-day" / "model.onnx", target / "cls-demo" / "model.onnx", target / "pipeline-day.yaml"]
    if all(path.is_file() for path in needed):
        return target
    if directory is not None:
        raise ClusterError(f"{directory} is not a demo model repository (edgeaigc build-demo-models --output DIR)")
    progress(f"building the demo models once into {target} (edgeaigc build-demo-models; up to ~30 min on 2 cores)")
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.inference.demo_models.build", "--output", str(target), "--no-progress"],
        check=False,
    )
    if result.returncode != 0 or not all(path.is_file() for path in needed):
        raise ClusterError(f"building the demo models failed (exit {result.returncode}); see the output above")
    return target


def measure_work_samples_ms(model: Path, feeds: list[np.ndarray] | None = None, runs: int = 30) -> list[float]:
    """Milliseconds of each of ``runs`` inferences as the model server runs them (its :class:`OnnxModel`: the
    same session options, one intra-op thread), on this machine: their median is the work per request the fleet
    declares, on this bed's reference core (EdgeNode coreSpeed 1); their spread, the per-frame work sim-to-real
    predicts the p95 from. ``feeds``: the model's input tensors, one per request, taken
    in turn (:func:`camera_tensors`: what the cameras send); without them, zeros shaped as
    :func:`~edgeaigc.cluster.bench_quota.example_feed` says."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeaigc.inference.server.model import ModelConfig, OnnxModel

    with ThreadPoolExecutor(1) as executor:
        server_model = OnnxModel(model.stem, model, ModelConfig(), executor)
        server_model.load()
        name = server_model.inputs[0].name
        outputs = [output.name for output in server_model.outputs]
        if not feeds:
            feeds = [np.zeros_like(tensor) for tensor in example_feed(model)[0].values()]
        for tensor in feeds[:3]:  # warm-up: allocations, kernels chosen
            server_model.predict({name: tensor}, outputs)
        times = []
        for run in range(runs):
            started = time.perf_counter()
            server_model.predict({name: feeds[run % len(feeds)]}, outputs)
            times.append((time.perf_counter() - started) * 1000.0)
        server_model.close()
    return [round(t, 3) for t in times]


def camera_tensors(model: DemoModel, camera: DemoCamera, frames: int = 10) -> list[np.ndarray]:
    """The input tensors ``camera`` sends ``model``: its first ``frames`` frames (the clip, or the generated
    scene), made into the model's input as the camera's pipeline configuration says (letterbox, scale, layout).
    A classifier gets the whole frame at its input size, not a crop: a CNN's work does not depend on content."""
    from edgeaigc.inference.pipeline.camera import generated_frames, video_frames
    from edgeaigc.inference.pipeline.config import PipelineConfig, load_pipeline_config
    from edgeaigc.inference.pipeline.image import letterbox, to_tensor

    arguments = list(camera.arguments)

    def value(flag: str) -> str | None:
        return arguments[arguments.index(flag) + 1] if flag in arguments else None

    config_path = value("--pipeline-config")
    config = load_pipeline_config(config_path) if config_path else PipelineConfig()
    spec = config.detector if model.stage == "detection" or config.classifier is None else config.classifier
    video = value("--video")
    source = (
        video_frames(video, 1.0, frames)[0]
        if video
        else generated_frames(1.0, frames, False, int(value("--seed") or 0))
    )
    return [to_tensor([letterbox(image, spec)[0]], spec) for _, _, image in source]


def input_kilobytes(model: Path) -> float:
    """KB of one request's input tensor (float32, a batch of one): what a camera uploads per request."""
    _, shape = example_feed(model)
    return int(np.prod(shape)) * 4 / 1024


def choose_models(shared: Path | None, repository: Path) -> list[DemoModel]:
    models = [
        DemoModel("det-demo-day", "detection", repository / "det-demo-day" / "model.onnx", "day"),
        DemoModel("cls-demo", "classification", repository / "cls-demo" / "model.onnx"),
    ]
    if shared is not None:
        models.insert(0, DemoModel("det-yolox-nano", "detection", shared / "yolox_nano.onnx"))
    return models


def choose_cameras(shared: Path | None, repository: Path) -> list[DemoCamera]:
    pipeline = str(repository / "pipeline-day.yaml")
    demo = ("det-demo-day", "cls-demo")  # pipeline-day.yaml: the demo detector, then the classifier
    scene = DemoCamera(
        "camera-1", "generated scene, seed 1", ("--generated", "--seed", "1", "--pipeline-config", pipeline), demo
    )
    if shared is None:
        first = ("--generated", "--seed", "0", "--pipeline-config", pipeline)
        return [DemoCamera("camera-0", "generated scene, seed 0", first, demo), scene]
    clip = shared / "highway_cctv_video02.avi"
    return [
        DemoCamera(
            "camera-0",
            f"{clip.name} (YOLOX-Nano)",
            ("--video", str(clip), "--detector-model", "det-yolox-nano"),
            ("det-yolox-nano",),
        ),
        scene,
    ]


def edge_storage_mib(models: list[DemoModel]) -> float:
    """Room on the Pi for the largest model, but not for the whole catalogue: placement has to choose."""
    sizes = [m.file.stat().st_size / 2**20 for m in models]
    return round(max(max(sizes) * 1.1, 0.6 * sum(sizes)), 2)


def fleet_documents(
    models: list[DemoModel],
    cameras: list[DemoCamera],
    urls: dict[str, str],
    work_ms: dict[str, float],
    fps: float,
    interval_s: int,
) -> list[dict[str, Any]]:
    """The Cameras, EdgeNode, InferenceModels and PlacementPolicy of the demo (written to the output too)."""

    def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "edgeaigc.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}

    documents = [resource("Camera", camera.name, {"edgeNode": NODE, "fps": fps}) for camera in cameras]
    documents.append(
        resource(
            "EdgeNode",
            NODE,
            {
                "nodeName": NODE,
                "modelStorage": f"{edge_storage_mib(models)}Mi",
                "cores": EDGE_CORES,
                "coreSpeed": 1.0,  # work is measured on this machine's cores
                # The bed's "radio" is loopback: wide enough that no camera's share ever binds, so both
                # phases see the same frames (shares are enforced and measured by bench-uplink).
                "bandwidthMHz": 400.0,
                # The "cloud" is on the same host: a Linux bridge, not a WAN. 1 Gbit/s here made the model add
                # 6-17 ms of transfer to each miss that the bed never showed (sim-to-real of the first runs).
                "backhaulMbps": 10000.0,
                "rttMs": 1.0,
                "energyPricePerCoreSecond": 1.25e-07,
            },
        )
    )
    for model in models:
        digest = hashlib.sha256(model.file.read_bytes()).hexdigest()
        spec = {
            "stage": model.stage,
            "daypart": model.daypart,
            # rounded up: the replica's fetch refuses a file larger than the size (3574.3 KiB is not 3574Ki)
            "size": f"{math.ceil(model.file.stat().st_size / 1024)}Ki",
            "workMs": round(work_ms[model.name], 2),
            "inputKB": round(input_kilobytes(model.file), 1),
            "outputKB": 2.0,
            "artifact": {"url": urls[f"{model.name}.onnx"], "sha256": digest},
        }
        documents.append(resource("InferenceModel", model.name, spec))
    documents.append(
        resource(
            "PlacementPolicy",
            POLICY,
            {
                "algorithm": "td3",
                "mode": "apply",
                "intervalSeconds": interval_s,
                "churnLimit": 2,
                "sloSeconds": 1.0,
                "prometheusURL": f"http://{network.HOST_ADDRESS}:{network.PROMETHEUS_PORT}",
                "actor": {"configMapName": ACTORS_CONFIGMAP, "key": ACTOR_KEY},
                "reward": {"alpha": 1.0, "beta": 1.0, "tRefSeconds": 0.1, "cRefPerRequest": 5.0e-06},
                "cloud": {
                    "coreSpeed": CLOUD_REPLICA_CORES,
                    "pricePerCoreSecond": 1.1e-05,
                    "pricePerGBTransfer": 0.09,
                    "downloadPricePerGB": 2.0,
                },
            },
        )
    )
    return documents


# -- the running system --------------------------------------------------------------------------------


def served_figures(
    url: str, window_s: float, at: float, minimum: float = 0.5
) -> dict[str, dict[str, tuple[float, float]]]:
    """Model -> served_by -> (requests, mean latency in s) the gateway answered over the last ``window_s``
    (places with fewer than ``minimum`` requests left out)."""
    window = f"[{max(round(window_s), 5)}s]"
    by = "sum by (model, served_by)"
    figures: dict[str, dict[str, tuple[float, float]]] = {}
    try:
        counts = query(url, f"{by} (increase({REQUESTS_TOTAL}{{{GATEWAY}}}{window}))", at=at)
        sums = query(url, f"{by} (increase({REQUEST_SECONDS_TOTAL}{{{GATEWAY}}}{window}))", at=at)
    except Exception:  # a gap in the samples, not the end of the demo
        return figures
    seconds = {(r["metric"].get("model"), r["metric"].get("served_by")): float(r["value"][1]) for r in sums}
    for r in counts:
        model, served_by, requests = r["metric"].get("model"), r["metric"].get("served_by"), float(r["value"][1])
        if model and served_by and requests >= minimum:
            mean = seconds.get((model, served_by), 0.0) / requests if requests else 0.0
            figures.setdefault(model, {})[served_by] = (round(requests, 2), mean)
    return figures


def camera_bytes(url: str, window_s: float, at: float) -> dict[str, float]:
    """Camera -> request bytes the gateway accepted from it over the last ``window_s`` (empty on a gap)."""
    window = f"[{max(round(window_s), 5)}s]"
    try:
        rows = query(url, f"sum by (camera) (increase({CAMERA_REQUEST_BYTES_TOTAL}{{{GATEWAY}}}{window}))", at=at)
    except Exception:  # a gap in the samples, not the end of the demo
        return {}
    return {r["metric"]["camera"]: round(float(r["value"][1])) for r in rows if r["metric"].get("camera")}


def gateway_buckets(url: str, window_s: float, at: float) -> list[float] | None:
    """The gateway's request-duration histogram over the last ``window_s``, all places and models together:
    cumulative counts at :data:`REQUEST_LATENCY_BUCKETS`, then ``+Inf`` (None on a gap)."""
    window = f"[{max(round(window_s), 5)}s]"
    try:
        rows = query(url, f"sum by (le) (increase({REQUEST_DURATION_SECONDS}_bucket{{{GATEWAY}}}{window}))", at=at)
    except Exception:  # a gap in the samples, not the end of the demo
        return None
    counts = {float(r["metric"]["le"]): float(r["value"][1]) for r in rows if "le" in r["metric"]}
    bounds = [*REQUEST_LATENCY_BUCKETS, float("inf")]
    if not all(bound in counts for bound in bounds):
        return None
    return [round(counts[bound], 2) for bound in bounds]


def uplink_plan(stack: RealStack) -> tuple[dict[str, float], float | None, int | None]:
    """The cameras' bandwidth shares, the node's uplink (bytes/s) and the generation of the routing table the
    operator wrote for the gateways."""
    from edgeaigc.inference.gateway.routing_table import parse_routing_table

    output = stack.kubectl("get", "configmap", object_name(POLICY, "routing"), "-n", NAMESPACE, "-o", "json")
    text = json.loads(output).get("data", {}).get(ROUTING_TABLE_KEY)
    if not text:
        return {}, None, None
    table = parse_routing_table(text)
    routes = table.edge_nodes.get(NODE)
    if routes is None:
        return {}, None, table.generation
    uplink = routes.uplink_bytes_per_second
    return dict(routes.camera_bandwidth_share), None if uplink is None else float(uplink), table.generation


def gateway_uplink(url: str, window_s: float, at: float) -> tuple[dict[str, float], int | None]:
    """Camera -> the mean upload rate (bytes/s) the gateway held it to over the last ``window_s``, and the
    oldest routing-table generation it held then: what it enforced, which its ConfigMap volume may delay."""
    window = f"[{max(round(window_s), 5)}s]"
    try:
        rates = query(url, f"avg by (camera) (avg_over_time({UPLINK_RATE}{{{GATEWAY}}}{window}))", at=at)
        generation = query(url, f"min(min_over_time({ROUTING_TABLE_GENERATION}{{{GATEWAY}}}{window}))", at=at)
    except Exception:  # a gap in the samples, not the end of the demo
        return {}, None
    by_camera = {r["metric"]["camera"]: float(round(float(r["value"][1]))) for r in rates if r["metric"].get("camera")}
    return by_camera, int(float(generation[0]["value"][1])) if generation else None


def gateway_figures(url: str, window_s: int, at: float) -> dict[str, dict[str, float | None]]:
    """Per model over the last ``window_s``: requests, edge requests, edge hit rate, mean latency at the gateway."""
    figures: dict[str, dict[str, float | None]] = {}
    for model, places in served_figures(url, max(window_s, 10), at, minimum=0.0).items():
        requests = sum(count for count, _ in places.values())
        hits = places.get("edge", (0.0, 0.0))[0]
        seconds = sum(count * mean for count, mean in places.values())
        figures[model] = {
            "requests": round(requests, 1),
            "edge_requests": round(hits, 1),
            "edge_hit_rate": round(hits / requests, 4) if requests else None,
            "mean_latency_ms": round(1000 * seconds / requests, 1) if requests else None,
        }
    return figures


def _edge_millicores(stack: RealStack) -> dict[str, int]:
    """Model -> CPU limit (millicores) of its Ready edge replica, as the kubelet runs it (after resizes)."""
    from kubernetes.utils import parse_quantity

    limits = {}
    for pod in stack.pods("app.kubernetes.io/component=edge-inference"):
        if not pod_ready(pod):
            continue
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        # status.containerStatuses[].resources is what the kubelet applied (in-place resize); spec is the ask.
        applied = statuses[0].get("resources", {}).get("limits", {}) or pod["spec"]["containers"][0]["resources"].get(
            "limits", {}
        )
        if "cpu" in applied:
            limits[pod["metadata"]["labels"].get("edgeaigc.io/model", "?")] = int(parse_quantity(applied["cpu"]) * 1000)
    return limits


def _placement(stack: RealStack) -> tuple[list[str], dict[str, Any]]:
    policy = json.loads(stack.kubectl("get", "pp", POLICY, "-n", NAMESPACE, "-o", "json"))
    status = policy.get("status", {})
    models: list[str] = next(
        (entry["models"] for entry in status.get("placement", []) if entry["edgeNode"] == NODE), []
    )
    return sorted(models), status


def _edge_cpu(stack: RealStack) -> dict[str, str]:
    """Model -> the CPU limit of its running edge replica."""
    limits = {}
    for pod in stack.pods("app.kubernetes.io/component=edge-inference"):
        model = pod["metadata"]["labels"].get("edgeaigc.io/model", "?")
        container = pod["spec"]["containers"][0]
        limits[model] = container.get("resources", {}).get("limits", {}).get("cpu", "?") + (
            "" if pod_ready(pod) else " (starting)"
        )
    return limits


def live_table(
    stack: RealStack, algorithm: str, left_s: float, url: str, placement: tuple[list[str], dict[str, Any]]
) -> Any:
    """The live table; ``placement``: :func:`_placement`'s answer, read once per refresh by the caller."""
    from rich.table import Table

    cached, status = placement
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    figures = gateway_figures(url, 60, time.time())
    cpu = _edge_cpu(stack)
    title = f"{algorithm} — {left_s:4.0f} s left — cached on {NODE}: {', '.join(cached) or 'nothing'}"
    degraded = conditions.get("Degraded", {})
    if degraded.get("status") == "True":
        title += f" — Degraded: {degraded.get('reason')}"
    table = Table(title=title)
    for column in ("model", "on the Pi (CPU limit)", "requests/min", "edge hit rate", "mean latency at gateway"):
        table.add_column(column)
    for model in sorted(set(figures) | set(cpu)):
        row = figures.get(model, {})
        hit, latency = row.get("edge_hit_rate"), row.get("mean_latency_ms")
        table.add_row(
            model,
            cpu.get(model, "-"),
            f"{row.get('requests') or 0:.0f}",
            "-" if hit is None else f"{hit:.0%}",
            "-" if latency is None else f"{latency:.0f} ms",
        )
    return table


def _http_status(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def measure_overhead_ms(
    stack: RealStack, gateway: str, models: list[DemoModel], work_ms: dict[str, float], camera: str, requests: int = 30
) -> float:
    """The fixed time of a request besides its model's work: the median latency, through the real gateway,
    of the model with the least work (whose work is then a small part), less that work at the CPU that
    served it. What the system model adds to every request (``requestOverheadMs``)."""
    import httpx

    smallest = min(models, key=lambda m: work_ms[m.name])
    feed, shape = example_feed(smallest.file)
    inputs = [{"name": name, "shape": shape, "datatype": "FP32", "data": [0.0] * int(np.prod(shape))} for name in feed]
    token = stack.camera_token_files[camera].read_text().strip()
    headers = {"Authorization": f"Bearer {token}", "X-Edgeaigc-Camera": camera}
    times, served = [], []
    with httpx.Client(timeout=20) as client:
        for _ in range(requests):  # bounded: `requests` calls, each at most 20 s
            started = time.perf_counter()
            response = client.post(
                f"{gateway}/v2/models/{smallest.name}/infer", json={"inputs": inputs}, headers=headers
            )
            if response.status_code == 200:
                times.append(1000 * (time.perf_counter() - started))
                served.append(response.headers.get("X-Edgeaigc-Served-By", "cloud"))
            time.sleep(0.2)
    if not times:
        raise ClusterError(f"no answer from the gateway for {smallest.name}: cannot measure the request overhead")
    cores = CLOUD_REPLICA_CORES if served.count("cloud") >= len(served) / 2 else EDGE_CORES
    return max(0.0, float(np.median(times)) - work_ms[smallest.name] / cores)


def _clear_edge(stack: RealStack) -> None:
    """Every phase starts from an empty Pi: the phases differ only by the algorithm."""
    selector = "app.kubernetes.io/component=edge-inference"
    stack.kubectl("delete", "deploy,svc", "-n", NAMESPACE, "-l", selector, "--wait=true", timeout_s=180)
    wait_until(lambda: not stack.pods(selector), 180, "the edge replicas to go")


def _set_policy(stack: RealStack, **spec: Any) -> None:
    stack.kubectl("patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", json.dumps({"spec": spec}))


def _start_phase(stack: RealStack, algorithm: str, interval_s: float) -> None:
    """An empty Pi, then ``algorithm`` deciding. The operator is in dry-run while the edge is cleared: in
    apply mode its next decision re-created the replicas being deleted, and the Pi never emptied (the
    e2e test's shorter phases hit it)."""
    _set_policy(stack, mode="dry-run")
    time.sleep(interval_s + 2)  # a decision already under way finishes its writes first
    _clear_edge(stack)
    # The guard off: a phase shows its algorithm alone, not a heuristic that took over from it.
    _set_policy(stack, mode="apply", algorithm=algorithm, guard={"enabled": False})


@contextlib.contextmanager
def _cameras(
    stack: RealStack, cameras: list[DemoCamera], fps: float, frames: int, out: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    gateway = stack.gateway_service_url()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for camera in cameras:
            command = [
                sys.executable, "-m", "edgeaigc.inference.pipeline.camera", *camera.arguments,
                "--gateway", gateway, "--camera-id", camera.name, "--fps", f"{fps:g}", "--frames", str(frames),
                "--timeout", "20", "--token-file", str(stack.camera_token_files[camera.name]),
                "--frame-log", str(out / f"{camera.name}.frames.jsonl"), "--json", "--no-progress",
                "--every-frame",  # a busy replica's 429 is waited out: both phases see every frame
            ]  # fmt: skip
            with (out / f"{camera.name}.json").open("wb") as stdout, (out / f"{camera.name}.log").open("wb") as log:
                processes[camera.name] = subprocess.Popen(command, stdout=stdout, stderr=log)
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
            if process.poll() is None:
                process.kill()


def run_phase(
    stack: RealStack, algorithm: str, cameras: list[DemoCamera], args: argparse.Namespace, out: Path
) -> PhaseResult:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    url = f"http://{network.HOST_ADDRESS}:{network.PROMETHEUS_PORT}"
    _start_phase(stack, algorithm, args.interval)
    result = PhaseResult(algorithm)
    phase_dir = out / algorithm
    phase_dir.mkdir(parents=True, exist_ok=True)
    frames = max(1, int(args.minutes * 60 * args.fps))
    started = time.time()
    # Bounded: the cameras send `frames` each; a phase never outlasts its length by more than 3 minutes.
    deadline = started + args.minutes * 60 + 180
    meter = ReplicaMeter()
    with contextlib.suppress(ClusterError):
        meter.baseline(stack.pods(REPLICAS))  # the cloud replicas served the previous phase: count from here
    with _cameras(stack, cameras, args.fps, frames, phase_dir) as processes:

        def step() -> Any:
            placement = _placement(stack)
            if not result.placements or result.placements[-1] != placement[0]:
                result.placements.append(placement[0])
            return live_table(stack, algorithm, max(0.0, started + args.minutes * 60 - time.time()), url, placement)

        def running() -> bool:
            return time.time() < deadline and any(p.poll() is None for p in processes.values())

        last_sample = time.time()

        def sample() -> None:
            nonlocal last_sample
            now = time.time()
            if now - last_sample < args.interval:
                return
            with contextlib.suppress(ClusterError):
                cached, _ = _placement(stack)
                served = served_figures(url, now - last_sample, now)
                shares, uplink, generation = uplink_plan(stack)
                accepted = camera_bytes(url, now - last_sample, now)
                enforced, held = gateway_uplink(url, now - last_sample, now)
                limits = _edge_millicores(stack)
                generations = (generation, held) if generation is not None and held is not None else None
                replicas = meter.read(stack.pods(REPLICAS))
                histogram = gateway_buckets(url, now - last_sample, now)
                result.samples.append(
                    Sample(
                        now,
                        now - last_sample,
                        cached,
                        limits,
                        served,
                        shares,
                        uplink,
                        accepted,
                        enforced,
                        generations=generations,
                        replicas=replicas,
                        gateway_buckets=histogram,
                    )
                )
            last_sample = now

        if console.is_terminal:
            with Live(console=console, refresh_per_second=1) as live:
                while running():
                    with contextlib.suppress(ClusterError):
                        live.update(step())
                    sample()
                    time.sleep(3)
        else:
            last_print = 0.0
            while running():
                with contextlib.suppress(ClusterError):
                    table = step()
                    if time.time() - last_print > 30:
                        console.print(table)
                        last_print = time.time()
                sample()
                time.sleep(3)
    result.seconds = time.time() - started
    time.sleep(3)  # the last scrape of the gateway
    result.per_model = gateway_figures(url, int(result.seconds) + 5, time.time())
    for camera in cameras:
        try:
            result.cameras[camera.name] = json.loads((phase_dir / f"{camera.name}.json").read_text())
        except (OSError, json.JSONDecodeError):
            result.cameras[camera.name] = {"error": f"no summary: see {phase_dir / (camera.name + '.log')}"}
    return result


def counts_match(results: list[PhaseResult]) -> bool:
    """Placement must not change results: every camera counted the same vehicles in every phase."""
    cameras = results[0].cameras
    return all(
        "counts" in result.cameras.get(name, {}) and result.cameras[name]["counts"] == cameras[name].get("counts")
        for result in results
        for name in cameras
    )


def print_summary(results: list[PhaseResult], load: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Same recorded input through the real system ({load})")
    for column in ("policy", "edge hit rate", "frames answered", "frame latency p50 / p95", "vehicles counted"):
        table.add_column(column)
    for result in results:
        hit = result.hit_rate()
        answered = sum(c.get("frames", 0) - c.get("errors", 0) for c in result.cameras.values())
        sent = sum(c.get("frames", 0) for c in result.cameras.values())
        p50 = [c["latency_ms"]["p50"] for c in result.cameras.values() if c.get("latency_ms", {}).get("p50")]
        p95 = [c["latency_ms"]["p95"] for c in result.cameras.values() if c.get("latency_ms", {}).get("p95")]
        counted = "; ".join(
            f"{name}: {sum((c.get('counts') or {}).values()) if isinstance(c.get('counts'), dict) else c.get('counts')}"
            for name, c in result.cameras.items()
        )
        table.add_row(
            result.algorithm,
            "-" if hit is None else f"{hit:.1%}",
            f"{answered}/{sent}",
            f"{max(p50):.0f} / {max(p95):.0f} ms" if p50 and p95 else "-",
            counted,
        )
    console.print(table)
    same = counts_match(results)
    console.print(
        "vehicle counts identical across policies" if same else "[red]vehicle counts differ between policies[/red]"
    )


# -- the command -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()

    def progress(message: str) -> None:
        console.print(f"[dim]\\[demo] {message}[/dim]")

    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    shared = shared_data()
    progress("../shared/data found: camera-0 plays the motorway clip through YOLOX-Nano" if shared else
             "../shared/data not found: both cameras play generated scenes through the demo models")  # fmt: skip
    try:
        repository = demo_models(args.demo_models, progress)
        models, cameras = choose_models(shared, repository), choose_cameras(shared, repository)
        progress("measuring each model's work per request on this machine (the server's session, real frames)")
        sender = {name: camera for camera in cameras for name in camera.models}
        work_samples_ms = {
            model.name: measure_work_samples_ms(
                model.file, camera_tensors(model, sender[model.name]) if model.name in sender else None
            )
            for model in models
        }
        work_ms = {name: float(np.median(samples)) for name, samples in work_samples_ms.items()}
        progress(", ".join(f"{name} {ms:.1f} ms" for name, ms in work_ms.items()))
        staged = out / "artifacts"
        staged.mkdir(exist_ok=True)
        files = []
        for model in models:
            files.append(staged / f"{model.name}.onnx")
            shutil.copyfile(model.file, files[-1])
        values = repo_path("charts", "edgeaigc", "ci", "real-demo-values.yaml")
        with real_cluster(
            files, namespace=NAMESPACE, progress=progress, workdir=out / "stack", real_cloud_node=True
        ) as (stack, urls):
            make_secrets(stack, stack.state.directory, tuple(camera.name for camera in cameras))
            install_chart(stack, [values], progress)
            documents = fleet_documents(models, cameras, urls, work_ms, args.fps, args.interval)
            (out / "fleet.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
            stack.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(documents))
            progress(f"the fleet is in {out / 'fleet.yaml'}; waiting for the cloud replicas (misses go there)")
            wait_until(
                lambda: (
                    (pods := stack.pods("app.kubernetes.io/component=cloud-inference"))
                    and len(pods) == len(models)
                    and all(pod_ready(p) for p in pods)
                ),
                420,
                "a Ready cloud replica per model on cloud-real-0",
                poll_s=5,
            )
            progress("waiting for the gateway's first routing table (the operator's first decision)")
            gateway = stack.gateway_service_url()
            wait_until(lambda: _http_status(f"{gateway}/v2/health/ready") == 200, 300, "the gateway to be ready")
            overhead_ms = measure_overhead_ms(stack, gateway, models, work_ms, cameras[0].name)
            progress(f"per-request overhead through the gateway: {overhead_ms:.1f} ms (the fleet's requestOverheadMs)")
            patch = json.dumps({"spec": {"requestOverheadMs": round(overhead_ms, 1)}})
            stack.kubectl("patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", patch)
            for document in documents:
                if document["kind"] == "PlacementPolicy":
                    document["spec"]["requestOverheadMs"] = round(overhead_ms, 1)
            (out / "fleet.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
            results = [run_phase(stack, algorithm, cameras, args, out) for algorithm in ("td3", args.baseline)]
    except ClusterError as error:
        console.print(f"[red]edgeaigc demo --real: {error}[/red]")
        return 1
    except KeyboardInterrupt:
        return 130
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    summary = {
        "load": load,
        "minutes": args.minutes,
        "fps": args.fps,
        "work_ms": work_ms,
        "work_samples_ms": work_samples_ms,
        "cameras": {camera.name: camera.source for camera in cameras},
        "camera_models": {camera.name: list(camera.models) for camera in cameras},
        "cloud_replica_cores": CLOUD_REPLICA_CORES,
        "phases": [result.to_dict() for result in results],
        "vehicle_counts_match": counts_match(results),
    }
    phases = {result.algorithm: result.samples for result in results}
    bed = Bed(
        {camera.name: list(camera.models) for camera in cameras},
        CLOUD_REPLICA_CORES,
        routing_tables(phases),
        work_samples_ms,
    )
    sim = report(documents, phases, bed)
    summary["sim_to_real"] = sim.to_dict()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(results, load)
    print_report(sim, load)
    points = [point for phase in sim.as_planned.values() for point in phase]
    plot(points, out / "sim-to-real.png", f"demo --real: predicted vs observed ({load})")
    progress(f"everything is in {out} (summary.json, fleet.yaml, each phase's camera logs)")
    answered = all(c.get("frames", 0) > c.get("errors", 0) for result in results for c in result.cameras.values())
    return 0 if answered and summary["vehicle_counts_match"] else 1
