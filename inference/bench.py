"""``edgeaigc bench-serving``: figures for the model server (printed, not timed tests).

Three parts (``--parts``, default all):

- **overhead**: requests/s and p50/p99 latency of onnxruntime called in-process and of
  ``edgeaigc serve`` on loopback, same model, same input, at several concurrencies.
  The in-process baseline is ``concurrency`` threads sharing one session, tried with one
  intra-op thread per run and with one per core; its best setting is the reference. The server
  is driven by a lean closed-loop load generator in this process (one keep-alive HTTP/1.1
  connection per client, the request encoded once, every response read in full); bodies use the
  binary tensor extension both ways (what clients use for images). The generator shares the
  machine's cores with the server, so its CPU per request is reported, and the best raw setting
  is measured once more with that much CPU taken by a spinning process: the most any server
  driven by that generator could reach.
- **peer**: the same model behind KServe's Python model server (``kserve`` package) with the same
  load generator. kserve is run from a separate virtualenv (``--kserve-python``; it pins many
  packages, so it never goes into the project's environment) through the peer harness
  :mod:`edgeaigc.inference.bench_kserve_peer`, both as KServe's examples write a model (a plain
  ``def predict``) and with ``predict`` in a thread pool.
- **work**: milliseconds of one request per model at one core (one intra-op thread), written to
  ``--work-output`` (default ``policy/calibration/work_ms.json``) for the simulator's scenarios.

The model is YOLOX-Nano from ``../shared/data`` when present (or ``--model``), else a generated
convolutional stand-in of similar cost (needs the ``onnx`` package). Every load is bounded by
``--requests`` per level and ``--max-seconds`` per level and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: ../shared/data beside the repository (development machines); never inside it.
SHARED_YOLOX = Path(__file__).resolve().parents[2] / "shared" / "data" / "yolox_nano.onnx"
DEFAULT_WORK_OUTPUT = Path(__file__).resolve().parents[1] / "policy" / "calibration" / "work_ms.json"
#: A Raspberry Pi 4 core (Cortex-A72, 1.5 GHz, 128-bit NEON) is taken as 0.3 of the reference
#: x86 core these figures are measured on: work on a Pi 4 core = work_ms x 1/0.3. The same factor
#: as the traffic-city scenario's edge core_speed; an assumption, not a measurement on a Pi.
PI4_CORE_SPEED = 0.3
#: Published YOLOX GFLOPs (Megvii's model zoo) used to scale the measured Nano to the larger variants.
YOLOX_GFLOPS = {"nano": 1.08, "tiny": 6.45, "s": 26.8}


@dataclass
class LoadFigures:
    """One load level against one system."""

    system: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_ms: float | None = None
    """CPU time of the serving process per answered request (in-process: of this process)."""
    client_cpu_ms: float | None = None
    """CPU time of the load generator per answered request (0 in-process)."""
    intra_op_threads: int | None = None
    """onnxruntime intra-op threads per run (in-process figures)."""
    load_average: float | None = dataclasses.field(default_factory=lambda: _load_average())
    """The machine's 1-minute load average when the level ended (other work shares the cores)."""

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def row(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (
            f"{self.system:<36} {self.concurrency:>4} {self.requests:>6} {self.errors:>4} "
            f"{self.throughput:>9.1f} {ms(self.p50_ms):>8} {ms(self.p99_ms):>8} {ms(self.server_cpu_ms):>10} "
            f"{ms(self.client_cpu_ms):>10} {ms(self.load_average):>6}"
        )


HEADER = (
    f"{'system':<36} {'conc':>4} {'reqs':>6} {'err':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'srv cpu ms':>10} {'cli cpu ms':>10} {'load':>6}"
)


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(latencies: Sequence[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    values = np.asarray(latencies) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


# --------------------------------------------------------------------------------------------
# Models


def standin_detector(path: Path) -> Path:
    """A YOLO-like convolutional graph of about YOLOX-Nano's cost (~1.5 GFLOPs at 416x416), random weights."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    channels = [(3, 16, 2), (16, 32, 2), (32, 64, 2), (64, 128, 1), (128, 128, 1)]
    previous = "images"
    for i, (cin, cout, stride) in enumerate(channels):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (cin * 9)) ** 0.5).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    head = (rng.standard_normal((85, 128, 1, 1)) * 0.05).astype(np.float32)
    weights.append(numpy_helper.from_array(head, "head"))
    weights.append(numpy_helper.from_array(np.array([1, 85, -1], dtype=np.int64), "flat"))
    nodes += [
        helper.make_node("Conv", [previous, "head"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Reshape", ["scores", "flat"], ["flat_scores"]),
        helper.make_node("Transpose", ["flat_scores"], ["output"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2704, 85])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def standin_classifier(path: Path, size: int, widths: Sequence[int], classes: int = 5) -> Path:
    """A small CNN image classifier ``[N, 3, size, size] -> [N, classes]`` with random weights."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(1)
    nodes, weights = [], []
    previous, cin = "input", 3
    for i, cout in enumerate(widths):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (cin * 9)) ** 0.5).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[2, 2]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous, cin = f"r{i}", cout
    weights.append(numpy_helper.from_array((rng.standard_normal((cin, classes)) * 0.1).astype(np.float32), "fc"))
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("MatMul", ["features", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def session(path: Path, intra_op_threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def example_input(sess: Any) -> dict[str, np.ndarray]:
    """Uniform noise of each input's shape (dynamic dims 1); these models cost the same whatever the content."""
    feed = {}
    for node in sess.get_inputs():
        shape = [dim if isinstance(dim, int) else 1 for dim in node.shape]
        feed[node.name] = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)
    return feed


# --------------------------------------------------------------------------------------------
# Load


RAW = "onnxruntime in-process"


def raw_load(
    sess: Any,
    feed: dict[str, np.ndarray],
    concurrency: int,
    requests: int,
    max_seconds: float,
    intra_op_threads: int = 1,
    system: str | None = None,
) -> LoadFigures:
    """onnxruntime in-process: ``concurrency`` threads sharing one session until ``requests`` are done."""
    latencies: list[float] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= requests or time.perf_counter() > deadline:
                    return
                issued += 1
            started = time.perf_counter()
            sess.run(None, feed)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu_before = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu_ms = (time.process_time() - cpu_before) * 1000.0 / max(len(latencies), 1)
    p50, p99 = _percentiles(latencies)
    system = system or f"{RAW} (intra-op {intra_op_threads})"
    return LoadFigures(system, concurrency, len(latencies), 0, seconds, p50, p99, cpu_ms, 0.0, intra_op_threads)


@contextlib.contextmanager
def cpu_burner(cores: float, period_s: float = 0.01) -> Iterator[None]:
    """A process keeping ``cores`` of one core busy (spins that share of every 10 ms, sleeps the rest)."""
    share = min(max(cores, 0.0), 1.0)
    code = (
        "import time\n"
        f"busy, period = {share * period_s!r}, {period_s!r}\n"
        "while True:\n"
        "    start = time.perf_counter()\n"
        "    while time.perf_counter() - start < busy: pass\n"
        "    time.sleep(max(period - busy, 0.0))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        child.kill()
        child.wait(timeout=10)


def raw_without_client_share(
    figures: Sequence[LoadFigures], model_path: Path, feed: dict[str, np.ndarray], requests: int, max_seconds: float
) -> LoadFigures:
    """The best raw setting again, with the CPU our load generator used at our best level taken away.

    On a machine whose cores the load generator shares with the server, the server can at best
    reach raw onnxruntime *minus the generator's CPU*; this is that ceiling, measured.
    """
    ours = max((f for f in figures if f.system.startswith("edgeaigc")), key=lambda f: f.throughput)
    raw = max((f for f in figures if f.system.startswith(RAW)), key=lambda f: f.throughput)
    client_cores = (ours.client_cpu_ms or 0.0) * ours.throughput / 1000.0
    threads = raw.intra_op_threads or 1
    with cpu_burner(client_cores):
        time.sleep(0.2)
        return raw_load(
            session(model_path, threads),
            feed,
            raw.concurrency,
            requests,
            max_seconds,
            threads,
            system=f"{RAW} - {client_cores:.2f} core",
        )


def http_request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """Host, port and the whole HTTP/1.1 keep-alive POST of ``body`` to ``url``, encoded once."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """Send one pre-encoded request and read its whole response (Content-Length or chunked); True on 200."""
    writer.write(request)
    status_line = await reader.readline()
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
    else:
        while size := int((await reader.readline()).split(b";", 1)[0], 16):
            await reader.readexactly(size + 2)  # the chunk and its CRLF
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # trailers
    return status_line.split(b" ", 2)[1:2] == [b"200"]


async def http_load_async(
    system: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    requests: int,
    max_seconds: float,
    server_pid: int | None = None,
    warmup: int = 3,
) -> LoadFigures:
    """``concurrency`` closed-loop clients POSTing ``body`` to ``url`` until ``requests`` are answered.

    The load generator is kept lean so that it takes as little as possible of the CPU it shares
    with the server: each client holds one keep-alive HTTP/1.1 connection (asyncio streams) and
    writes the same request bytes, encoded once; it reads every response in full (headers, then
    the Content-Length or chunked body) and counts a request as answered on status 200. A
    general-purpose client (httpx) took 3-4 ms of CPU per 2 MB YOLOX request here, this one about 1 ms.
    """
    host, port, request = http_request_bytes(url, body, headers)
    latencies: list[float] = []
    errors = 0
    issued = 0
    connections = [await asyncio.open_connection(host, port, limit=1 << 22) for _ in range(concurrency)]
    try:
        for _ in range(warmup):
            await _exchange(*connections[0], request)
        deadline = time.perf_counter() + max_seconds

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal issued, errors
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                started = time.perf_counter()
                try:
                    ok = await _exchange(reader, writer, request)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                    return  # the connection's state is unknown after a failure

        server_before = process_cpu_seconds(server_pid) if server_pid else None
        client_before = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker(reader, writer) for reader, writer in connections))
        seconds = time.perf_counter() - started
        client_ms = (time.process_time() - client_before) * 1000.0 / max(len(latencies), 1)
        server_after = process_cpu_seconds(server_pid) if server_pid else None
    finally:
        for _, writer in connections:
            writer.close()
    server_ms = None
    if server_before is not None and server_after is not None:
        server_ms = (server_after - server_before) * 1000.0 / max(len(latencies), 1)
    p50, p99 = _percentiles(latencies)
    return LoadFigures(system, concurrency, len(latencies), errors, seconds, p50, p99, server_ms, client_ms)


def http_load(*args: Any, **kwargs: Any) -> LoadFigures:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(http_load_async(*args, **kwargs))
    return uvloop.run(http_load_async(*args, **kwargs))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


@contextlib.contextmanager
def process(command: list[str], url: str) -> Iterator[int]:
    """A server process (its pid in the block), stopped (SIGTERM, then kill) when the block ends."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, child)
        yield child.pid
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def our_server_command(repository: Path, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeaigc.inference.serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--memory-budget",
        "unlimited",
        "--log-level",
        "warning",
    ]


def request_body(feed: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    from edgeaigc.inference import protocol

    encoded = protocol.encode_infer_request(feed, binary_data=True, binary_data_output=True)
    return encoded.body, {"Content-Type": encoded.content_type, **encoded.headers}


# --------------------------------------------------------------------------------------------
# Work per request


def work_ms(run: Callable[[], object], min_runs: int = 20, max_seconds: float = 5.0) -> dict[str, float]:
    """Median and p90 wall milliseconds of ``run`` on this thread (after 3 warm-up runs)."""
    for _ in range(3):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < min_runs or (time.perf_counter() < deadline and len(times) < 200):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000.0)
        if time.perf_counter() > deadline and len(times) >= min_runs:
            break
    return {
        "work_ms": round(statistics.median(times), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "runs": len(times),
    }


def measure_work(detector: Path, detector_is_yolox: bool, workdir: Path) -> dict[str, Any]:
    """Per-model work per request at one core; see the written file's ``description``."""
    from edgeaigc.inference.pipeline.config import FlowConfig
    from edgeaigc.inference.pipeline.detect import Detection
    from edgeaigc.inference.pipeline.flow import FlowAnalyzer

    models: dict[str, Any] = {}
    det = session(detector)
    det_feed = example_input(det)
    nano = work_ms(lambda: det.run(None, det_feed))
    det_name = "YOLOX-Nano (COCO, 1x3x416x416)" if detector_is_yolox else "generated stand-in of YOLOX-Nano's cost"
    for variant in ("det-yolox-nano-day", "det-yolox-nano-night"):
        models[variant] = {**nano, "basis": "measured", "measured_as": det_name}
    if detector_is_yolox:
        for variant, key in (("det-yolox-tiny", "tiny"), ("det-yolox-s-rain", "s")):
            factor = YOLOX_GFLOPS[key] / YOLOX_GFLOPS["nano"]
            models[variant] = {
                "work_ms": round(nano["work_ms"] * factor, 1),
                "basis": "scaled",
                "note": f"YOLOX-Nano measured x {YOLOX_GFLOPS[key]}/{YOLOX_GFLOPS['nano']} GFLOPs (published); "
                "an upper bound: plain convolutions run more FLOPs per ms than Nano's depthwise ones",
            }
    classifiers = {
        "cls-small": (64, (16, 32, 64)),
        "cls-night": (64, (16, 32, 64)),
        "cls-truck-axles": (96, (16, 32, 64, 128)),
        "cls-large": (128, (32, 64, 128, 256)),
    }
    for name, (size, widths) in classifiers.items():
        path = standin_classifier(workdir / f"{name}.onnx", size, widths)
        cls = session(path)
        crops = {"input": np.random.default_rng(2).uniform(0, 1, size=(1, 3, size, size)).astype(np.float32)}
        models[name] = {
            **work_ms(functools.partial(cls.run, None, crops)),
            "basis": "measured",
            "measured_as": f"generated CNN stand-in, one {size}x{size} crop, conv widths {list(widths)}",
        }
    # The flow stage is the project's own Python (tracking, counting, occupancy), not an ONNX model.
    rng = np.random.default_rng(3)
    analyzer = FlowAnalyzer(FlowConfig(fps=5))
    frame = [0]

    def flow_update() -> None:
        frame[0] += 1
        detections = [
            Detection((x, y, x + 40.0, y + 25.0), 0.9, 2, "car")
            for x, y in zip(rng.uniform(0, 600, 8) + frame[0] * 5 % 600, rng.uniform(0, 330, 8), strict=True)
        ]
        analyzer.update(detections, (360, 640))

    flow = work_ms(flow_update)
    for name in ("flow-urban", "flow-highway", "flow-intersection", "flow-incident"):
        models[name] = {
            **flow,
            "basis": "measured",
            "measured_as": "FlowAnalyzer.update, 8 vehicles in a 640x360 frame",
        }
    return models


def machine_state() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_5m_15m": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_work_file(path: Path, models: dict[str, Any], state: dict[str, Any]) -> None:
    document = {
        "description": (
            "Work per request of each model of the traffic-city scenario: median wall milliseconds of one "
            "request at one reference core (onnxruntime CPU, one intra-op thread, batch 1), written by "
            "`edgeaigc bench-serving --parts work`. basis: measured (the model itself or the stand-in named in "
            "measured_as), or scaled (from a measured model by published GFLOPs)."
        ),
        "reference_core": state,
        "raspberry_pi_4": {
            "core_speed": PI4_CORE_SPEED,
            "slowdown_factor": round(1 / PI4_CORE_SPEED, 2),
            "note": (
                "Assumed, not measured: a Pi 4 core (Cortex-A72, 1.5 GHz, 128-bit NEON) does 0.3 of the "
                "reference core's inference work, so a request takes work_ms x 3.33 there. Same figure as the "
                "scenarios' edge core_speed."
            ),
        },
        "models": models,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts", default="overhead,peer,work", help="comma-separated: overhead, peer, work (default: all)"
    )
    parser.add_argument("--model", metavar="PATH", help="ONNX model (default: ../shared/data YOLOX-Nano or a stand-in)")
    parser.add_argument("--concurrency", default="1,2,4,8", help="load levels (default: 1,2,4,8)")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (default: 200)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longest a level runs (default: 20)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="overhead: run the sweep this many times, interleaved, and keep each level's best (default: 1)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our server's onnxruntime threads")
    parser.add_argument(
        "--kserve-python",
        default="/tmp/kserve-venv/bin/python",
        metavar="PATH",
        help="Python of a virtualenv with kserve and onnxruntime (default: /tmp/kserve-venv/bin/python)",
    )
    parser.add_argument("--work-output", default=str(DEFAULT_WORK_OUTPUT), metavar="PATH", help="work file to write")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")


def run(args: argparse.Namespace) -> int:
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"overhead", "peer", "work"}
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    bad = not levels or min(levels) < 1 or args.requests < 1 or args.max_seconds <= 0 or args.repeats < 1
    if unknown or not parts or bad:
        print(
            "edgeaigc bench-serving: bad --parts, --concurrency, --requests, --max-seconds or --repeats",
            file=sys.stderr,
        )
        return 2
    state = machine_state()
    print(f"machine: {state}")
    results: dict[str, Any] = {"machine": state, "levels": []}
    with tempfile.TemporaryDirectory(prefix="edgeaigc-bench-") as scratch:
        workdir = Path(scratch)
        if args.model:
            model_path, is_yolox = Path(args.model), "yolox" in Path(args.model).name.lower()
        elif SHARED_YOLOX.is_file():
            model_path, is_yolox = SHARED_YOLOX, True
        else:
            model_path, is_yolox = standin_detector(workdir / "standin.onnx"), False
        name = "detector"
        repository = workdir / "repository"
        (repository / name).mkdir(parents=True)
        (repository / name / "model.onnx").symlink_to(model_path.resolve())
        print(f"model: {model_path} ({'YOLOX-Nano' if is_yolox else 'generated stand-in'})")
        sess = session(model_path)
        feed = example_input(sess)
        load = infer_load(args, name, *request_body(feed))
        figures: list[LoadFigures] = []
        if parts & {"overhead", "peer"}:
            print(HEADER)
        if "overhead" in parts:
            figures += overhead(args, levels, model_path, sess, feed, repository, load)
        if "peer" in parts:
            harness = Path(__file__).with_name("bench_kserve_peer.py")
            if not Path(args.kserve_python).is_file():
                print(f"peer skipped: no kserve Python at {args.kserve_python}", file=sys.stderr)
            else:
                for threaded in (False, True):
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    command = [args.kserve_python, str(harness), "--model", str(model_path), "--name", name]
                    command += ["--port", str(port)] + (["--threaded"] if threaded else [])
                    label = "kserve (predict in threads)" if threaded else "kserve (plain def predict)"
                    with process(command, url) as pid:
                        figures += [load(label, url, concurrency, pid) for concurrency in levels]
        results["levels"] = [{**asdict(f), "throughput": f.throughput} for f in figures]
        if figures:
            print(summarise(figures))
        if "work" in parts:
            models = measure_work(model_path, is_yolox, workdir)
            write_work_file(Path(args.work_output), models, state)
            results["work"] = models
            print(f"work per request (ms at one core) written to {args.work_output}:")
            for model, entry in models.items():
                print(f"  {model:<22} {entry['work_ms']:>9.2f}  ({entry['basis']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


#: One load level against a server: (system label, base URL, concurrency, server pid) -> printed figures.
InferLoad = Callable[[str, str, int, int], LoadFigures]


def infer_load(args: argparse.Namespace, name: str, body: bytes, headers: dict[str, str]) -> InferLoad:
    """The same infer request for model ``name``, at ``args.requests`` / ``args.max_seconds`` per level."""

    def run_level(system: str, base_url: str, concurrency: int, pid: int) -> LoadFigures:
        url = f"{base_url}/v2/models/{name}/infer"
        figures = http_load(system, url, body, headers, concurrency, args.requests, args.max_seconds, pid)
        print(figures.row(), flush=True)
        return figures

    return run_level


def overhead(
    args: argparse.Namespace,
    levels: Sequence[int],
    model_path: Path,
    sess: Any,
    feed: dict[str, np.ndarray],
    repository: Path,
    load: InferLoad,
) -> list[LoadFigures]:
    """Raw onnxruntime (one and all cores' intra-op threads) and our server at every level.

    With ``--repeats`` the whole sweep runs that many times, each system measured right after
    the others at the same level (so a burst of load from other work hits them alike), and the
    best run of each (system, concurrency) is kept: load from elsewhere only ever slows a run.
    """
    thread_options = sorted({1, os.cpu_count() or 1})
    raw_sessions = {threads: sess if threads == 1 else session(model_path, threads) for threads in thread_options}
    runs: list[LoadFigures] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(our_server_command(repository, port, args.workers), url) as pid:
        for _ in range(args.repeats):
            for concurrency in levels:
                for threads, raw_sess in raw_sessions.items():
                    runs.append(raw_load(raw_sess, feed, concurrency, args.requests, args.max_seconds, threads))
                    print(runs[-1].row(), flush=True)
                runs.append(load(f"edgeaigc serve (workers={args.workers})", url, concurrency, pid))
    best = best_runs(runs)
    for _ in range(args.repeats):
        runs.append(raw_without_client_share(best, model_path, feed, args.requests, args.max_seconds))
        print(runs[-1].row(), flush=True)
    return best_runs(runs)


def best_runs(runs: Sequence[LoadFigures]) -> list[LoadFigures]:
    """The run of highest throughput of each (system, concurrency), in first-seen order."""
    best: dict[tuple[str, int], LoadFigures] = {}
    for run in runs:
        key = (run.system, run.concurrency)
        if key not in best or run.throughput > best[key].throughput:
            best[key] = run
    return list(best.values())


def summarise(figures: Sequence[LoadFigures]) -> str:
    """Best throughput per system and the issue's two ratios."""
    best: dict[str, LoadFigures] = {}
    for figure in figures:
        if figure.system not in best or figure.throughput > best[figure.system].throughput:
            best[figure.system] = figure
    lines = ["best concurrency per system:"]
    for system, figure in best.items():
        lines.append(
            f"  {system:<36} {figure.throughput:7.1f} req/s at {figure.concurrency} (p99 {figure.p99_ms:.1f} ms)"
        )
    ours = next((f for s, f in best.items() if s.startswith("edgeaigc")), None)
    raws = [f for s, f in best.items() if s.startswith(RAW) and " - " not in s]
    raw = max(raws, key=lambda f: f.throughput) if raws else None
    if ours and raw:
        lines.append(
            f"  ours / raw onnxruntime ({raw.system}, {raw.concurrency}): "
            f"{ours.throughput / raw.throughput:.2f} (target >= 0.9)"
        )
        client_cores = (ours.client_cpu_ms or 0.0) * ours.throughput / 1000.0
        lines.append(
            f"  load generator: {ours.client_cpu_ms or 0.0:.2f} ms CPU per request = {client_cores:.2f} core "
            f"of {os.cpu_count()} at our best level"
        )
        ceiling = next((f for s, f in best.items() if s.startswith(RAW) and " - " in s), None)
        if ceiling:
            lines.append(
                f"  ours / raw onnxruntime with the generator's CPU taken away ({ceiling.throughput:.1f} req/s): "
                f"{ours.throughput / ceiling.throughput:.2f}"
            )
        if ours.server_cpu_ms and raw.server_cpu_ms:
            lines.append(
                f"  CPU per request: server {ours.server_cpu_ms:.1f} ms, onnxruntime alone {raw.server_cpu_ms:.1f} ms "
                f"({raw.server_cpu_ms / ours.server_cpu_ms:.2f})"
            )
    peers = [f for s, f in best.items() if s.startswith("kserve")]
    if ours and peers:
        peer = max(peers, key=lambda f: f.throughput)
        lines.append(
            f"  ours / best kserve: {ours.throughput / peer.throughput:.2f} (target >= 1.5); "
            f"p99 {ours.p99_ms:.1f} vs {peer.p99_ms:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.bench``, the same as ``edgeaigc bench-serving``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("bench-serving", argv)


if __name__ == "__main__":
    sys.exit(main())
