"""Clients that send too slowly, too much or nothing: memory stays bounded, connections are given back.

Issue 12, item 1. Real servers on 127.0.0.1 only: ``edgeaigc serve`` and ``edgeaigc gateway``
processes where a test measures memory (RSS from ``/proc/PID/status``), in-process uvicorn
servers configured as those commands configure them otherwise. Every test bounds its time and
its number of connections.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from edgeaigc.inference.bench.load import process_rss_mib
from edgeaigc.inference.gateway.gateway import GatewaySettings
from edgeaigc.inference.http_server import ConnectionLimits
from edgeaigc.inference.server.routes import RequestLimits
from tests.component.conftest import (
    free_port,
    running_gateway,
    running_server,
    server_process,
    serving,
)
from tests.component.tables import EDGE_NODE, routing_table

AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}
MIB = 2**20


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/PID/status."""
    rss = process_rss_mib(pid)
    assert rss is not None, f"no VmRSS for process {pid}"
    return rss


def infer_head(length: int, json_length: int | None = None) -> bytes:
    """The head of ``POST /v2/models/affine/infer`` announcing a body of ``length`` bytes (a binary one with
    ``json_length``)."""
    binary = "" if json_length is None else f"Inference-Header-Content-Length: {json_length}\r\n"
    return f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n{binary}\r\n".encode()


def connect(url: str) -> socket.socket:
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname or "127.0.0.1", address.port or 80), timeout=10)
    return sock


def answer(sock: socket.socket, timeout_s: float) -> tuple[int | None, bytes]:
    """The status and head of what the server answers before it closes the connection (None: closed silently).

    Fails the test when the connection is still open after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {timeout_s} s (got {received[:80]!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            continue
        if not chunk:
            break
        received += chunk
    if not received:
        return None, b""
    head = received.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head.lower()


@contextlib.contextmanager
def connections(url: str, count: int) -> Iterator[list[socket.socket]]:
    opened = [connect(url) for _ in range(count)]
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@pytest.mark.parametrize(
    ("json_length", "status"),
    [(None, 413), (100, 408)],
    ids=["JSON body: over the JSON limit at once", "binary body: within the limits, times out"],
)
def test_announced_bodies_that_never_come_cost_no_memory(
    standard_root: Path, json_length: int | None, status: int
) -> None:
    """The issue's attack: 64 connections announce 16 MiB and send nothing (it took 176 -> 1168 MiB)."""
    with server_process(standard_root, "edge", "--body-timeout", "3", "--head-timeout", "2") as server:
        assert httpx.post(f"{server.url}/v2/models/affine/infer", json=AFFINE).status_code == 200
        before = rss_mib(server.process.pid)
        with connections(server.url, 64) as stalled:
            for sock in stalled:
                sock.sendall(infer_head(16 * MIB, json_length))
            time.sleep(1.5)
            grown = rss_mib(server.process.pid) - before
            assert grown < 50, f"64 stalled uploads took {grown:.0f} MiB"
            meanwhile = httpx.post(f"{server.url}/v2/models/affine/infer", json=AFFINE, timeout=10)
            assert meanwhile.status_code == 200
            answers = [answer(sock, timeout_s=6)[0] for sock in stalled]
    assert answers == [status] * 64


def test_trickling_bodies_get_408_at_the_body_timeout(standard_root: Path) -> None:
    """One byte every 0.2 s keeps no connection past the body timeout (24 such stayed open for good)."""
    limits = RequestLimits(body_timeout_s=1.0)
    with running_server(standard_root, limits=limits) as server, connections(server.url, 8) as trickling:
        started = time.monotonic()
        for sock in trickling:
            sock.sendall(infer_head(1000))
        open_ = list(trickling)
        while open_ and time.monotonic() - started < 4:
            readable, _, _ = select.select(open_, [], [], 0.2)
            for sock in open_:
                if sock not in readable:
                    with contextlib.suppress(OSError):
                        sock.send(b"0")
            open_ = [sock for sock in open_ if sock not in readable]
        elapsed = time.monotonic() - started
        assert not open_, f"{len(open_)} trickling connections got no answer within {elapsed:.1f} s"
        statuses = [answer(sock, timeout_s=2)[0] for sock in trickling]
    assert set(statuses) <= {408, None} and statuses.count(408) >= 1, statuses
    assert elapsed < 3


def test_body_bytes_held_at_once_are_bounded(standard_root: Path) -> None:
    """Past the body memory, the request whose bytes would pass it gets 503 with Retry-After; a body given
    back (the client gone) frees its share."""
    limits = RequestLimits(body_memory_bytes=1 * MIB)
    lingering = ConnectionLimits(head_timeout_s=1.0)  # how long the rest of a refused body is read
    with running_server(standard_root, max_request_bytes=2 * MIB, limits=limits, connections=lingering) as server:
        memory = server.app.state.body_memory
        with connect(server.url) as first, connect(server.url) as second:
            first.sendall(infer_head(int(1.5 * MIB)) + bytes(800 * 1024))
            deadline = time.monotonic() + 5
            while memory.held < 800 * 1024 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert memory.held == 800 * 1024
            second.sendall(infer_head(int(1.5 * MIB)))
            with contextlib.suppress(OSError):  # the server may close before all of it is sent
                second.sendall(bytes(800 * 1024))
            status, head = answer(second, timeout_s=5)
            assert status == 503
            assert b"retry-after: 1" in head
            assert server.client.post("/v2/models/affine/infer", json=AFFINE).status_code == 200
        deadline = time.monotonic() + 5
        while memory.held and time.monotonic() < deadline:
            time.sleep(0.02)
        assert memory.held == 0


def test_request_heads_are_bounded_in_size_and_time(standard_root: Path) -> None:
    """httptools takes headers without end (+200 MiB for 200 MiB of headers) and keeps silent connections."""
    limits = ConnectionLimits(head_timeout_s=0.5)
    with running_server(standard_root, connections=limits) as server:
        with connect(server.url) as bloated:  # 32 KiB: read at once, so that the 400 is not lost to a reset
            bloated.sendall(b"GET /v2 HTTP/1.1\r\nHost: test\r\n" + b"X-Filler: " + b"a" * (32 * 1024) + b"\r\n")
            assert answer(bloated, timeout_s=5)[0] == 400
        with connect(server.url) as silent, connect(server.url) as half_head:
            half_head.sendall(b"GET /v2 HTTP/1.1\r\nHost: te")
            assert answer(silent, timeout_s=2) == (None, b"")
            assert answer(half_head, timeout_s=2) == (None, b"")
        with connect(server.url) as keep_alive:  # a whole head in time is served, and the deadline starts anew
            for _ in range(2):
                keep_alive.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
                assert keep_alive.recv(4096).startswith(b"HTTP/1.1 200")
                time.sleep(0.3)


def test_gateway_stalled_uploads_time_out_and_their_memory_is_bounded(tmp_path: Path) -> None:
    """The gateway held 20 stalled uploads for good (+250 MiB); now a body limit and a body timeout hold."""
    table = tmp_path / "routing.json"
    table.write_text(routing_table(1, {}, {"affine": f"http://127.0.0.1:{free_port()}"}).to_json())
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "edgeaigc.inference.gateway.cli",
        "--edge-node",
        EDGE_NODE,
        "--routing-table",
        str(table),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--body-timeout",
        "3",
        "--body-memory",
        "16Mi",
        "--head-timeout",
        "2",
        "--no-camera-auth",
    ]
    with serving(command, port) as gateway:
        httpx.post(f"{gateway.url}/v2/models/affine/infer", content=bytes(100_000))  # warm: 502, nothing listens
        before = rss_mib(gateway.process.pid)
        with connections(gateway.url, 20) as stalled:
            for sock in stalled:
                sock.sendall(infer_head(16 * MIB))
                with contextlib.suppress(OSError):  # refused uploads are closed mid-way
                    sock.sendall(bytes(4 * MIB))
            time.sleep(0.5)
            grown = rss_mib(gateway.process.pid) - before
            statuses = [answer(sock, timeout_s=6)[0] for sock in stalled]
    assert grown < 50, f"20 stalled uploads of 4 MiB took {grown:.0f} MiB"
    # 16 MiB holds four of the bodies until they time out; the others are refused at the limit
    assert statuses.count(408) >= 3 and statuses.count(503) >= 12 and set(statuses) <= {408, 503}, statuses


@pytest.mark.parametrize("what", ["server", "gateway"])
def test_a_client_gone_mid_body_is_a_400_not_a_500(standard_root: Path, tmp_path: Path, what: str) -> None:
    """A disconnect mid-body was counted as code 500 with a traceback by the server (the gateway said 400)."""
    table = tmp_path / "routing.json"
    table.write_text(routing_table(1, {}, {"affine": f"http://127.0.0.1:{free_port()}"}).to_json())
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=table)
    serves = running_server(standard_root) if what == "server" else running_gateway(settings)
    with serves as server:
        with connect(server.url) as leaving:
            leaving.sendall(infer_head(1000) + b"{")
            time.sleep(0.3)
        labels = {"model": "affine", "served_by": "edge"}
        if what == "gateway":
            labels |= {"edge_node": EDGE_NODE}
        deadline = time.monotonic() + 5
        while server.sample("edgeaigc_requests_total", code="400", **labels) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.sample("edgeaigc_requests_total", code="400", **labels) == 1
        assert server.sample("edgeaigc_requests_total", code="500", **labels) in (None, 0)
