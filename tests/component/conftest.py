"""Real uvicorn servers on 127.0.0.1 (a thread each, a socket bound to a free port) and httpx clients."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from edgeaigc.inference.gateway.app import create_gateway_app
from edgeaigc.inference.gateway.gateway import Gateway, GatewaySettings
from edgeaigc.inference.gateway.security import GatewaySecurity
from edgeaigc.inference.http_server import ConnectionLimits, server_config
from edgeaigc.inference.server.metrics import ServerMetrics
from edgeaigc.inference.server.repository import ModelRepository
from edgeaigc.inference.server.routes import RepositoryAccess, RequestLimits, create_app
from tests.component.builders import standard_repository

#: Where the project's shared data would be, beside the repository (never inside it).
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass
class RunningServer:
    url: str
    client: httpx.Client
    repository: ModelRepository
    app: FastAPI

    def metrics_text(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        return response.text

    def sample(self, name: str, **labels: str) -> float | None:
        """The value of one sample of a fresh scrape (None when absent)."""
        return sample_value(self.metrics_text(), name, **labels)


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in an exposition text (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


@contextlib.contextmanager
def running_server(
    root: Path,
    *,
    memory_budget_bytes: int | None = None,
    max_request_bytes: int = 1 << 20,
    served_by: str = "edge",
    preload: bool = True,
    metrics: ServerMetrics | None = None,
    repository: ModelRepository | None = None,
    wait_for: str = "/v2/health/ready",
    limits: RequestLimits | None = None,
    connections: ConnectionLimits | None = None,
    repository_access: RepositoryAccess | None = None,
) -> Iterator[RunningServer]:
    """Serve ``root`` with a real uvicorn server in a thread until the block ends.

    The block starts once ``wait_for`` answers 200 (the server is ready, by default). The server is
    configured as ``edgeaigc serve`` configures it, with ``limits`` (their ``max_request_bytes`` is
    ``max_request_bytes``) and ``connections``. The repository API is on without a token unless
    ``repository_access`` says otherwise (these servers are the test's own).
    """
    repository = repository or ModelRepository(root, memory_budget_bytes=memory_budget_bytes, workers=2)
    limits = replace(limits or RequestLimits(), max_request_bytes=max_request_bytes)
    app = create_app(
        repository,
        limits=limits,
        served_by=served_by,
        preload=preload,
        metrics=metrics,
        repository_access=repository_access or RepositoryAccess(enabled=True),
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(server_config(app, connections or ConnectionLimits(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=20.0)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if server.started:
                with contextlib.suppress(httpx.TransportError):
                    if client.get(wait_for).status_code == 200:
                        break
            time.sleep(0.02)
        else:
            raise RuntimeError("the test server did not become ready within 20 s")
        yield RunningServer(url, client, repository, app)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


@pytest.fixture(scope="session")
def standard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def standard_server(standard_root: Path) -> Iterator[RunningServer]:
    """One server over the standard repository for tests that do not change it."""
    with running_server(standard_root, max_request_bytes=64 * 1024) as server:
        yield server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """An ``edgeaigc serve`` process on 127.0.0.1."""

    url: str
    process: subprocess.Popen[str]
    stderr: str = ""
    """What the process wrote on stderr, once it has stopped."""

    def scrape(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def wait_until_ready(url: str, process: subprocess.Popen[str] | None = None, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}: {process.communicate()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/v2/health/ready").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready within {timeout_s} s")
            time.sleep(0.05)


def stop_gracefully(process: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    """SIGTERM (how Kubernetes stops a pod), then what the process wrote on stderr; killed past ``timeout_s``."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return stderr


@contextlib.contextmanager
def server_process(root: Path, served_by: str, *extra: str, port: int | None = None) -> Iterator[ServerProcess]:
    """``python -m edgeaigc.inference.server.cli`` over ``root`` (one worker thread), stopped at the end."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "edgeaigc.inference.server.cli",
        "--model-repository",
        str(root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-by",
        served_by,
        "--workers",
        "1",
        "--log-level",
        "warning",
        *extra,
    ]
    with serving(command, port) as running:
        yield running


@contextlib.contextmanager
def serving(command: list[str], port: int) -> Iterator[ServerProcess]:
    """``command``, a server on ``port``, yielded once ready; stopped with SIGTERM at the end (killed after 15 s)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = ServerProcess(f"http://127.0.0.1:{port}", process)
    try:
        wait_until_ready(running.url, process)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            running.stderr = process.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            running.stderr = process.communicate(timeout=10)[1]


@dataclass
class RunningGateway:
    url: str
    client: httpx.Client
    gateway: Gateway

    def scrape(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        return response.text

    def sample(self, name: str, **labels: str) -> float | None:
        return sample_value(self.scrape(), name, **labels)


@contextlib.contextmanager
def running_gateway(
    settings: GatewaySettings,
    wait_for_table: bool = True,
    connections: ConnectionLimits | None = None,
    security: GatewaySecurity | None = None,
) -> Iterator[RunningGateway]:
    """A gateway app served as ``edgeaigc gateway`` serves it, in a thread on 127.0.0.1, until the block ends
    (cameras not authenticated unless ``security`` says so)."""
    gateway = Gateway(settings)
    app = create_gateway_app(settings, gateway, security)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(server_config(app, connections or ConnectionLimits(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30.0)
    try:
        deadline = time.monotonic() + 20
        while True:
            if server.started:
                with contextlib.suppress(httpx.TransportError):
                    status = client.get("/v2/health/ready").status_code
                    if status == 200 or (status == 503 and not wait_for_table):
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("the test gateway did not start within 20 s")
            time.sleep(0.02)
        yield RunningGateway(url, client, gateway)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()
