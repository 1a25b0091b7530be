"""Peer-to-peer model distribution on loopback: a real model server hands a loaded model's file to
``edgeaigc fetch-model --peer`` (a real process), which verifies it and falls back to the source."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgeaigc.inference.delivery.exit_codes import ExitCode
from tests.component.builders import affine_model
from tests.component.conftest import RunningServer, ServerProcess, server_process
from tests.component.test_fetch_model import FileServer, Route, files_in, server

__all__ = ["server"]  # the source's file server fixture, shared with test_fetch_model


@pytest.fixture(scope="module")
def peer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peer-models")
    affine_model(root / "det" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def peer(peer_root: Path) -> Iterator[ServerProcess]:
    """A site neighbour: ``edgeaigc serve --serve-artifacts`` with ``det`` loaded."""
    with server_process(peer_root, "edge", "--serve-artifacts") as running:
        yield running


def model_bytes(peer_root: Path) -> bytes:
    return (peer_root / "det" / "model.onnx").read_bytes()


def fetch(dest: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edgeaigc.cli", "fetch-model", *arguments, "--dest", str(dest)]
    command += ["--max-bytes", str(1 << 20), "--termination-log", str(dest.parent / "termination-log")]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def fetch_checked(dest: Path, source_url: str, payload: bytes, *arguments: str) -> subprocess.CompletedProcess[str]:
    """fetch-model from ``source_url`` with ``payload``'s sha256 (peers need one), plus ``arguments``."""
    return fetch(dest, "--url", source_url, "--sha256", hashlib.sha256(payload).hexdigest(), *arguments)


def test_the_server_hands_out_a_loaded_models_own_file(peer: ServerProcess, peer_root: Path) -> None:
    response = httpx.get(f"{peer.url}/v2/models/det/artifact", timeout=10)
    assert response.status_code == 200
    assert response.content == model_bytes(peer_root)
    assert response.headers["content-type"] == "application/octet-stream"
    missing = httpx.get(f"{peer.url}/v2/models/nothing/artifact", timeout=10)
    assert missing.status_code == 404
    # No path from the request: an encoded traversal is a model name that does not exist.
    traversal = httpx.get(f"{peer.url}/v2/models/..%2F..%2Fetc%2Fpasswd/artifact", timeout=10)
    assert traversal.status_code == 404


def test_the_artifact_endpoint_is_off_unless_asked_for(standard_server: RunningServer) -> None:
    response = standard_server.client.get("/v2/models/affine/artifact")
    assert response.status_code == 403
    assert "--serve-artifacts" in response.json()["error"]


def test_a_peer_with_the_right_bytes_is_used_and_the_source_is_not_touched(
    peer: ServerProcess, peer_root: Path, server: FileServer, tmp_path: Path
) -> None:
    payload = model_bytes(peer_root)
    server.routes["/det.onnx"] = Route(body=payload)
    dest = tmp_path / "models" / "det"
    result = fetch_checked(
        dest,
        f"{server.url}/det.onnx",
        payload,
        "--peer",
        f"{peer.url}/v2/models/det/artifact",
    )
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"fetched from peer {peer.url}/v2/models/det/artifact" in result.stderr
    assert server.requests["/det.onnx"] == 0
    assert (dest / "model.onnx").read_bytes() == payload
    assert files_in(dest) == ["config.yaml", "model.onnx"]


def test_a_peer_serving_corrupt_bytes_is_rejected_and_the_source_used(
    peer_root: Path, server: FileServer, tmp_path: Path
) -> None:
    payload = model_bytes(peer_root)
    server.routes["/det.onnx"] = Route(body=payload)
    server.routes["/corrupt-peer"] = Route(body=payload[:-1] + b"\x00")
    dest = tmp_path / "models" / "det"
    result = fetch_checked(
        dest,
        f"{server.url}/det.onnx",
        payload,
        "--peer",
        f"{server.url}/corrupt-peer",
    )
    assert result.returncode == ExitCode.OK, result.stderr
    assert "ChecksumMismatch" in result.stderr
    assert f"fetched from source {server.url}/det.onnx" in result.stderr
    assert server.requests["/corrupt-peer"] == 1 and server.requests["/det.onnx"] == 1
    assert (dest / "model.onnx").read_bytes() == payload
    assert files_in(dest) == ["config.yaml", "model.onnx"]


def test_unreachable_and_silent_peers_fall_back_within_the_timeout(
    peer_root: Path, server: FileServer, tmp_path: Path
) -> None:
    payload = model_bytes(peer_root)
    server.routes["/det.onnx"] = Route(body=payload)
    server.routes["/silent-peer"] = Route(body=payload, delay_s=10.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    dest = tmp_path / "models" / "det"
    started = time.monotonic()
    result = fetch_checked(
        dest,
        f"{server.url}/det.onnx",
        payload,
        "--peer",
        f"http://127.0.0.1:{closed_port}/v2/models/det/artifact",
        "--peer",
        f"{server.url}/silent-peer",
        "--peer-timeout",
        "0.5",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == ExitCode.OK, result.stderr
    assert "ConnectError" in result.stderr and "ReadTimeout" in result.stderr
    assert f"fetched from source {server.url}/det.onnx" in result.stderr
    # One 0.5 s read timeout and the process's start, far below the silent peer's 10 s.
    assert elapsed < 6.0
    assert (dest / "model.onnx").read_bytes() == payload


def test_peers_need_a_checksum(tmp_path: Path) -> None:
    result = fetch(tmp_path / "m", "--path", str(tmp_path / "x.onnx"), "--peer", "http://127.0.0.1:1/a")
    assert result.returncode == ExitCode.USAGE
    assert "--peer needs --sha256" in result.stderr


def test_the_operators_peers_file_is_read_and_a_missing_one_means_the_source(
    peer: ServerProcess, peer_root: Path, server: FileServer, tmp_path: Path
) -> None:
    payload = model_bytes(peer_root)
    server.routes["/det.onnx"] = Route(body=payload)
    peers_file = tmp_path / "det.pi-1"
    peers_file.write_text(f"{server.url}/no-such-peer\n{peer.url}/v2/models/det/artifact\n")
    result = fetch_checked(tmp_path / "a" / "det", f"{server.url}/det.onnx", payload, "--peers-file", str(peers_file))
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"fetched from peer {peer.url}/v2/models/det/artifact" in result.stderr
    missing = tmp_path / "absent"
    result = fetch_checked(tmp_path / "b" / "det", f"{server.url}/det.onnx", payload, "--peers-file", str(missing))
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"fetched from source {server.url}/det.onnx" in result.stderr
