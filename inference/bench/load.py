"""Load against a model: onnxruntime in-process and a closed-loop HTTP/1.1 load generator, with their figures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.inference.bench.models import session


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


def process_rss_mib(pid: int) -> float | None:
    """Resident memory of a process now, MiB (Linux /proc; None when it is gone or elsewhere)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # kB
    return None


def _percentiles(latencies: Sequence[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    values = np.asarray(latencies) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


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
        "edgeaigc.inference.server.cli",
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
