"""``edgeaigc bench-quota``: what a CPU limit does to a model's latency, on the real node (printed figures).

The compute share the operator decides becomes the CPU limit of a model's pod, i.e. a CFS quota
(``cpu.cfs_quota_us`` per 100 ms period) that the kubelet writes into the pod's cgroup. The system
model assumes a request's time is its work divided by the CPU it gets; CFS gives a pod its quota
in slices of each period and then throttles it until the next, so at small quotas a request that
needs more than one slice waits out whole periods. This benchmark measures it:

1. a local cluster with one real node (:func:`~edgeaigc.cluster.real_stack.real_cluster`), and for
   each model a Deployment built exactly as the operator builds a model replica (the init container
   fetches the ONNX file over HTTP from this machine, checksum verified; the server is ``edgeaigc
   serve``), pinned to the real node;
2. for each CPU limit of ``--limits`` (in millicores; the pod is resized in place, as the operator
   does, and the quota is read back from the container's cgroup before measuring): ``--requests``
   requests one at a time, then the same number from ``--concurrency`` clients at once, to the
   pod's address from this machine; p50/p95 latency, CPU seconds per request (the container's
   ``cpuacct.usage``) and the CFS throttling (``nr_throttled``, ``throttled_time`` of ``cpu.stat``);
3. the prediction of the system model for each limit: ``work / (limit x core speed)`` with the
   work per request measured in the same pod at the largest limit (``p50 x limit`` there), so the
   table shows where CFS makes the linear model wrong.

The models: ``--model NAME=PATH`` (YOLOX-Nano from ``../shared/data`` by default), and with
``--demo-models`` the demo detector and classifier that ``demo --real`` places (``det-demo-day``,
``cls-demo``), so that every model of the demo has its curve.

Writes ``quota.json`` and ``quota.png`` (latency against limit, measured and predicted) to
``--output``, and with ``--calibration-out`` the figures as a calibration file (format in
``docs/calibration.md``, section "CPU limits"). Traffic goes only to the real node's pod addresses
(198.18.0.0/15) on this machine; every loop is bounded by ``--requests`` and a time limit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.cluster.local import ClusterError
from edgeaigc.cluster.real_stack import NODE, RealStack, pod_ready, real_cluster, wait_until
from edgeaigc.cluster.realnode import container_cgroup_files

SHARED_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yolox_nano.onnx"
NAMESPACE = "bench-quota"
#: A stand-in policy: the replicas are the operator's, without a PlacementPolicy to own them.
POLICY = {"metadata": {"name": "bench-quota", "namespace": NAMESPACE, "uid": "00000000-0000-0000-0000-000000000000"}}
MAX_SECONDS_PER_LEVEL = 120.0
#: What ``demo --real`` places beside YOLOX-Nano: the demo detector and classifier (``edgeaigc build-demo-models``).
DEMO_MODEL_NAMES = ("det-demo-day", "cls-demo")
#: Where ``demo --real`` (and ``--demo-models`` here) finds them, built once.
DEMO_MODELS_CACHE = Path.home() / ".cache" / "edgeaigc" / "demo-models"
METHOD = (
    "edgeaigc bench-quota: one replica per model built by the operator's build_edge_deployment on the local "
    "cluster's real node (containerd, runc, cgroup v1 CFS, period 100 ms), resized in place from the largest limit "
    "down; at each limit the quota is read back from the container's cgroup, then N binary-tensor requests are sent "
    "from the host to the pod's address one at a time (clients=1) and from several clients at once; latency is the "
    "client's wall time; cpu_ms_per_request is the container's cpuacct.usage delta per request; throttling is "
    "cpu.stat's nr_throttled/throttled_time delta; predicted_ms = work_ms_at_one_core x clients / (limit / 1000), "
    "work_ms_at_one_core being cpu_ms_per_request at the largest limit, one client."
)


@dataclass
class Level:
    """One model at one CPU limit."""

    limit_m: int
    quota_us: int
    clients: int
    requests: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    cpu_ms_per_request: float
    throttled_periods: int
    throttled_ms: float
    predicted_ms: float = 0.0
    errors: int = 0


@dataclass
class ModelResult:
    name: str
    file: str
    input_shape: list[int]
    levels: list[Level] = field(default_factory=list)
    work_ms_at_one_core: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to measure (repeatable; default: det-yolox-nano=../shared/data/yolox_nano.onnx)",
    )
    parser.add_argument(
        "--demo-models",
        nargs="?",
        const=DEMO_MODELS_CACHE,
        type=Path,
        metavar="DIR",
        help="also measure the demo detector and classifier (det-demo-day, cls-demo) of this repository (default: "
        "~/.cache/edgeaigc/demo-models, built once there by edgeaigc build-demo-models if absent, as demo --real does)",
    )
    parser.add_argument(
        "--limits",
        default="100,200,300,500,1000",
        help="CPU limits in millicores, comma-separated (default: 100,200,300,500,1000; at most the node's 1000)",
    )
    parser.add_argument("--requests", type=int, default=30, help="requests per level (default: 30)")
    parser.add_argument("--concurrency", type=int, default=2, help="clients of the concurrent runs (default: 2)")
    parser.add_argument("--output", type=Path, default=Path("quota-out"), help="directory of the results")
    parser.add_argument("--calibration-out", type=Path, help="also write the figures as a calibration file here")


def _models(arguments: list[str], demo_repository: Path | None) -> dict[str, Path]:
    """Name -> ONNX file: the ``--model`` arguments (YOLOX-Nano if none, and ``../shared/data`` has it), then the
    demo models of ``demo_repository``."""
    models = {}
    for argument in arguments:
        name, _, path = argument.partition("=")
        if not name or not path:
            raise ValueError(f"--model takes NAME=PATH, not {argument!r}")
        models[name] = Path(path)
    if not arguments and (demo_repository is None or SHARED_MODEL.is_file()):
        models["det-yolox-nano"] = SHARED_MODEL
    if demo_repository is not None:
        models.update({name: demo_repository / name / "model.onnx" for name in DEMO_MODEL_NAMES})
    return models


def example_feed(path: Path) -> tuple[dict[str, np.ndarray], list[int]]:
    """A deterministic input for the model's first input (dynamic dimensions as 1), and its shape."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in first.shape]
    rng = np.random.default_rng(0)
    return {first.name: rng.uniform(0, 1, size=shape).astype(np.float32)}, shape


def replica(stack: RealStack, name: str, url: str, digest: str, size_mib: float, limit_m: int) -> dict[str, Any]:
    from edgeaigc.cluster.images import image_ref
    from edgeaigc.operator.builders import build_edge_deployment, memory_mebibytes

    deployment = build_edge_deployment(
        POLICY, name, NODE, NODE, limit_m, memory_mebibytes(size_mib), image_ref("inference"),
        {"url": url, "sha256": digest}, size_mib,
    )  # fmt: skip
    deployment["metadata"].pop("ownerReferences", None)  # no policy to own it: the benchmark deletes it
    return deployment


def cgroup_file(pod: dict[str, Any], controller: str, name: str) -> Path:
    container_id = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    matches = container_cgroup_files(NODE, container_id, controller, name)
    if len(matches) != 1:
        raise ClusterError(f"no single {controller} cgroup of container {container_id} on {NODE}: {matches}")
    return matches[0]


def cpu_stat(pod: dict[str, Any]) -> dict[str, int]:
    text = cgroup_file(pod, "cpu", "cpu.stat").read_text()
    return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


def cpu_usage_ns(pod: dict[str, Any]) -> int:
    return int(cgroup_file(pod, "cpuacct", "cpuacct.usage").read_text())


def measure(url: str, body: bytes, headers: dict[str, str], requests: int, clients: int) -> tuple[list[float], int]:
    """Latencies (s) of ``requests`` requests from ``clients`` clients at once, and the errors."""
    import httpx

    deadline = time.monotonic() + MAX_SECONDS_PER_LEVEL

    def client(count: int) -> tuple[list[float], int]:
        latencies, errors = [], 0
        with httpx.Client(timeout=60) as session:
            for _ in range(count):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    response = session.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        return latencies, errors

    shares = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, shares))
    return [latency for part, _ in results for latency in part], sum(errors for _, errors in results)


def resize(stack: RealStack, pod: dict[str, Any], limit_m: int) -> dict[str, Any]:
    """Resize the pod's CPU in place (as the operator does) and wait for the quota in its cgroup."""
    name = pod["metadata"]["name"]
    resources = {"cpu": f"{limit_m}m"}
    patch = {"spec": {"containers": [{"name": "inference", "resources": {"requests": resources, "limits": resources}}]}}
    stack.kubectl(
        "patch", "pod", name, "-n", NAMESPACE, "--subresource=resize", "--type=strategic", "-p", json.dumps(patch)
    )

    def applied() -> dict[str, Any] | None:
        current = json.loads(stack.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json"))
        quota = int(cgroup_file(current, "cpu", "cpu.cfs_quota_us").read_text())
        return current if quota == limit_m * 100 else None

    return wait_until(applied, 90, f"cpu.cfs_quota_us of {name} at {limit_m * 100}", poll_s=1.0)


def measure_model(
    stack: RealStack, name: str, path: Path, url: str, limits: list[int], args: argparse.Namespace
) -> ModelResult:
    from edgeaigc.inference import protocol

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    size_mib = path.stat().st_size / 2**20
    deployment = replica(stack, name, url, digest, size_mib, max(limits))
    stack.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(deployment))
    selector = f"edgeaigc.io/model={name}"

    def ready_pod() -> dict[str, Any] | None:
        pods = stack.pods(selector)
        return pods[0] if pods and pod_ready(pods[0]) else None

    pod = wait_until(ready_pod, 300, f"the replica of {name} ready on {NODE}")
    feed, shape = example_feed(path)
    encoded = protocol.encode_infer_request(feed, binary_data=True)
    headers = {"Content-Type": encoded.content_type, **encoded.headers}
    url_infer = f"http://{pod['status']['podIP']}:8080/v2/models/{name}/infer"
    result = ModelResult(name, str(path), shape)
    measure(url_infer, encoded.body, headers, 5, 1)  # warm-up: the first runs allocate
    for limit_m in sorted(limits, reverse=True):
        pod = resize(stack, pod, limit_m)
        quota = int(cgroup_file(pod, "cpu", "cpu.cfs_quota_us").read_text())
        for clients in sorted({1, args.concurrency}):
            stat_before, usage_before = cpu_stat(pod), cpu_usage_ns(pod)
            latencies, errors = measure(url_infer, encoded.body, headers, args.requests, clients)
            stat_after, usage_after = cpu_stat(pod), cpu_usage_ns(pod)
            if not latencies:
                raise ClusterError(f"{name} at {limit_m}m: no request answered ({errors} errors)")
            ms = np.asarray(latencies) * 1000
            level = Level(
                limit_m=limit_m,
                quota_us=quota,
                clients=clients,
                requests=len(latencies),
                p50_ms=round(float(np.percentile(ms, 50)), 2),
                p95_ms=round(float(np.percentile(ms, 95)), 2),
                mean_ms=round(float(ms.mean()), 2),
                cpu_ms_per_request=round((usage_after - usage_before) / 1e6 / len(latencies), 2),
                throttled_periods=stat_after["nr_throttled"] - stat_before["nr_throttled"],
                throttled_ms=round((stat_after["throttled_time"] - stat_before["throttled_time"]) / 1e6, 1),
                errors=errors,
            )
            result.levels.append(level)
            print(
                f"  {name} {limit_m:>5}m x{clients}: p50 {level.p50_ms:8.1f} ms  p95 {level.p95_ms:8.1f} ms  "
                f"cpu/request {level.cpu_ms_per_request:7.1f} ms  throttled {level.throttled_periods} periods",
                flush=True,
            )
    # The work at one core: the CPU a request used, measured where throttling is least (the largest limit).
    top = next(level for level in result.levels if level.limit_m == max(limits) and level.clients == 1)
    result.work_ms_at_one_core = top.cpu_ms_per_request
    for level in result.levels:
        # The system model: a request is served at the pod's CPU (limit), clients queue one after another.
        level.predicted_ms = round(result.work_ms_at_one_core * level.clients / (level.limit_m / 1000), 2)
    stack.kubectl("delete", "deployment", deployment["metadata"]["name"], "-n", NAMESPACE, "--wait=true")
    return result


def plot(results: list[ModelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for axis, result in zip(axes[0], results, strict=True):
        for clients, marker in ((1, "o"), (max(level.clients for level in result.levels), "s")):
            levels = [level for level in result.levels if level.clients == clients]
            limits = [level.limit_m for level in levels]
            axis.plot(limits, [level.p50_ms for level in levels], marker=marker, label=f"p50, {clients} client(s)")
            axis.plot(limits, [level.p95_ms for level in levels], marker=marker, linestyle=":", label=f"p95, {clients}")
            axis.plot(limits, [level.predicted_ms for level in levels], linestyle="--", label=f"model, {clients}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("CPU limit (millicores)")
        axis.set_ylabel("latency (ms)")
        axis.set_title(result.name)
        axis.legend(fontsize=7)
    figure.suptitle("latency against CPU limit on the real node; dashed: work / CPU", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    try:
        models = _models(args.model, args.demo_models)
        limits = sorted({int(value) for value in args.limits.split(",")})
    except ValueError as error:
        print(f"edgeaigc bench-quota: {error}", file=sys.stderr)
        return 2
    # The demo models of the default cache are built on first use (as demo --real does); elsewhere they must exist.
    missing = [str(path) for path in models.values() if not path.is_file() and path.parent.parent != DEMO_MODELS_CACHE]
    if missing or not limits or limits[0] < 10 or limits[-1] > 1000 or args.requests < 1 or args.concurrency < 1:
        print(
            f"edgeaigc bench-quota: models must exist ({', '.join(missing) or 'ok'}), limits 10..1000 millicores, "
            "--requests and --concurrency >= 1",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    results: list[ModelResult] = []
    try:
        if args.demo_models == DEMO_MODELS_CACHE:
            # Imported here: real_demo imports this module (example_feed).
            from edgeaigc.cluster.real_demo import demo_models

            demo_models(None, print)
        # Served under the model's name: the demo models are all called model.onnx in their repository.
        staged = args.output / "artifacts"
        staged.mkdir(exist_ok=True)
        for name, path in models.items():
            shutil.copyfile(path, staged / f"{name}.onnx")
        load_before = os.getloadavg()
        with real_cluster(
            [staged / f"{name}.onnx" for name in models], namespace=NAMESPACE, workdir=args.output / "cluster",
            progress=print,
        ) as (stack, urls):  # fmt: skip
            for name, path in models.items():
                print(f"{name}: limits {limits} millicores, {args.requests} requests per level", flush=True)
                results.append(measure_model(stack, name, path, urls[f"{name}.onnx"], limits, args))
    except ClusterError as error:
        print(f"edgeaigc bench-quota: {error}", file=sys.stderr)
        return 1
    document = {
        "description": "Latency of one request against the CPU limit (CFS quota) of the model's pod on a real "
        "node, measured by `edgeaigc bench-quota`; predicted_ms is the system model's work / CPU.",
        "method": METHOD,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_before_after": [load_before, os.getloadavg()],
        "cfs_period_us": 100_000,
        "models": {result.name: asdict(result) for result in results},
    }
    (args.output / "quota.json").write_text(json.dumps(document, indent=2))
    plot(results, args.output / "quota.png")
    if args.calibration_out:
        args.calibration_out.parent.mkdir(parents=True, exist_ok=True)
        args.calibration_out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.output / 'quota.json'} and {args.output / 'quota.png'}")
    return 0
