"""``edgeaigc bench-uplink``: does the gateway hold each camera to its bandwidth share? (printed figures)

A real ``edgeaigc serve`` (an identity model) and a real ``edgeaigc gateway`` on 127.0.0.1, whose
routing table gives the node an uplink of ``--uplink`` bytes/s and cameras the shares of
``--shares``. Each camera is a client thread that sends ``--request-bytes`` binary requests one
after the other, each as soon as the previous one is answered (and after ``Retry-After`` when
refused): a camera that wants more than any share, held back only by the gateway.

Two phases of ``--seconds`` each:

1. **contention**: every camera sends; each should achieve its share of the uplink.
2. **one camera idle**: the last camera stops; the others should achieve the whole uplink split in
   proportion to their shares (work-conserving).

The achieved rate of a camera is the request-body bytes the gateway accepted from it (its
``edgeaigc_gateway_uplink_accepted_bytes_total``, read at the start and end of the phase's
measured window, after a warm-up of ``--warmup`` seconds) over the window. ``--check`` exits 1
when a camera is more than ``--tolerance`` off its target. Traffic goes to 127.0.0.1 only and every
loop is bounded by the phase's time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeaigc.inference.bench.load import free_port, our_server_command, process, request_body

EDGE_NODE = "bench-node"
MODEL = "identity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uplink", type=float, default=2_000_000, metavar="BYTES_PER_S", help="node uplink (default: 2000000)"
    )
    parser.add_argument(
        "--shares", default="0.5,0.3,0.2", help="cameras' bandwidth shares, comma-separated (default: 0.5,0.3,0.2)"
    )
    parser.add_argument("--request-bytes", type=int, default=64_000, help="body size of each request (default: 64000)")
    parser.add_argument(
        "--connections",
        type=int,
        default=2,
        help="requests each camera keeps in flight, so that a round trip longer than a request's share of time "
        "does not slow the camera below its share (default: 2)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per phase (default: 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each phase's window (default: 3)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative error (default: 0.10)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a camera misses its target")


def identity_model(path: Path, width: int) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", width])],
    )
    path.parent.mkdir(parents=True)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def routing_json(edge_url: str, uplink: float, shares: dict[str, float]) -> str:
    from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable

    routes = EdgeNodeRoutes({MODEL: LocalModel((Endpoint(edge_url),), 1.0)}, shares, uplink_bytes_per_second=uplink)
    return RoutingTable(1, {EDGE_NODE: routes}, {}).to_json()


class Camera(threading.Thread):
    """Sends requests back to back until ``stop``; honours Retry-After; counts what it saw."""

    def __init__(self, name: str, url: str, body: bytes, headers: dict[str, str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.name_, self.url, self.body, self.stop = name, url, body, stop
        self.headers = {**headers, "X-Edgeaigc-Camera": name}
        self.answered = self.refused = self.failed = 0

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(
                        f"{self.url}/v2/models/{MODEL}/infer", content=self.body, headers=self.headers
                    )
                except httpx.HTTPError:
                    self.failed += 1
                    self.stop.wait(0.1)
                    continue
                if response.status_code == 429:
                    self.refused += 1
                    retry_ms = float(response.headers.get("x-edgeaigc-retry-after-ms", "100"))
                    self.stop.wait(retry_ms / 1000)
                elif response.status_code == 200:
                    self.answered += 1
                else:
                    self.failed += 1


def accepted_bytes(gateway_url: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "edgeaigc_gateway_uplink_accepted_bytes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["camera"]] = sample.value
    return totals


@contextlib.contextmanager
def running_cameras(
    names: list[str], connections: int, url: str, body: bytes, headers: dict[str, str]
) -> Iterator[list[Camera]]:
    stop = threading.Event()
    cameras = [Camera(name, url, body, headers, stop) for name in names for _ in range(connections)]
    for camera in cameras:
        camera.start()
    try:
        yield cameras
    finally:
        stop.set()
        for camera in cameras:
            camera.join(timeout=15)


def phase(
    title: str, active: list[str], shares: dict[str, float], args: argparse.Namespace, url: str, body: bytes,
    headers: dict[str, str],
) -> list[tuple[str, float, float]]:  # fmt: skip
    """Run ``active`` cameras; (camera, achieved B/s, target B/s) for each."""
    with running_cameras(active, args.connections, url, body, headers) as senders:
        time.sleep(args.warmup)
        before, started = accepted_bytes(url), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = accepted_bytes(url), time.monotonic() - started
    weight = sum(shares[name] for name in active)
    rows = []
    print(f"\n{title} ({elapsed:.1f} s measured)")
    print(f"  {'camera':<8} {'share':>6} {'target B/s':>12} {'achieved B/s':>13} {'error':>7} {'ok':>5} {'429':>5}")
    for name in active:
        achieved = (after.get(name, 0.0) - before.get(name, 0.0)) / elapsed
        target = args.uplink * shares[name] / weight
        rows.append((name, achieved, target))
        answered = sum(sender.answered for sender in senders if sender.name_ == name)
        refused = sum(sender.refused for sender in senders if sender.name_ == name)
        print(
            f"  {name:<8} {shares[name]:>6.2f} {target:>12,.0f} {achieved:>13,.0f} {achieved / target - 1:>+7.1%} "
            f"{answered:>5} {refused:>5}"
        )
    return rows


def run(args: argparse.Namespace) -> int:
    try:
        values = [float(v) for v in args.shares.split(",")]
    except ValueError:
        values = []
    if len(values) < 2 or any(v <= 0 for v in values) or args.uplink <= 0 or args.request_bytes < 64:
        print("edgeaigc bench-uplink: --shares needs two or more positive numbers, --uplink > 0", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.warmup < 0 or args.connections < 1:
        print("edgeaigc bench-uplink: --seconds and --connections must be positive", file=sys.stderr)
        return 2
    shares = {f"cam-{i}": v for i, v in enumerate(values)}
    width = 256
    rows = max(1, args.request_bytes // (4 * width))
    body, headers = request_body({"input": np.zeros((rows, width), dtype=np.float32)})
    print(
        f"uplink {args.uplink:,.0f} B/s, shares {shares}, requests of {len(body):,} B, load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="edgeaigc-bench-uplink-") as workdir:
        root = Path(workdir)
        identity_model(root / "repository" / MODEL / "model.onnx", width)
        server_port, gateway_port = free_port(), free_port()
        server_url, gateway_url = f"http://127.0.0.1:{server_port}", f"http://127.0.0.1:{gateway_port}"
        (root / "routing.json").write_text(routing_json(server_url, args.uplink, shares))
        gateway = [
            sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE,
            "--routing-table", str(root / "routing.json"), "--host", "127.0.0.1", "--port", str(gateway_port),
            "--log-level", "warning",
        ]  # fmt: skip
        with (
            process(our_server_command(root / "repository", server_port, 1), server_url),
            process(gateway, gateway_url),
        ):
            names = list(shares)
            results = phase("phase 1: every camera sends", names, shares, args, gateway_url, body, headers)
            results += phase(
                f"phase 2: {names[-1]} idle, its share goes to the others", names[:-1], shares, args, gateway_url,
                body, headers,
            )  # fmt: skip
    worst = max(abs(achieved / target - 1) for _, achieved, target in results)
    print(f"\nlargest error {worst:.1%} (tolerance {args.tolerance:.0%}); load average {os.getloadavg()[0]:.2f}")
    return 1 if args.check and worst > args.tolerance else 0
