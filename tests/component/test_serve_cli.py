"""``edgeaigc serve`` as a user runs it: help, exit codes, a real server process, no torch."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edgeaigc.inference.server import cli as serve
from tests.component.builders import affine_model
from tests.component.conftest import sample_value, stop_gracefully


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model-repository", "--port", "--memory-budget", "--max-request-bytes", "--served-by"):
        assert option in text


def test_missing_repository_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert serve.main(["--model-repository", str(missing)]) == 2
    assert capsys.readouterr().err == f"edgeaigc serve: model repository {missing} is not a directory\n"


def test_bad_size_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--model-repository", str(tmp_path), "--memory-budget", "lots"]) == 2
    assert "not a size: 'lots'" in capsys.readouterr().err


def test_bad_served_by_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--model-repository", str(tmp_path), "--served-by", "moon"])
    assert exit_info.value.code == 2


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = serve.main(
            ["--model-repository", str(tmp_path), "--host", "127.0.0.1", "--port", str(port), "--log-level", "critical"]
        )
    assert code == 1


def test_server_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    affine_model(tmp_path / "affine" / "model.onnx")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "edgeaigc.inference.server.cli",
        "--model-repository",
        str(tmp_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-by",
        "cloud",
        "--workers",
        "1",
        "--memory-budget",
        "64Mi",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server process not ready within 30 s"
                time.sleep(0.1)
            response = client.post(
                "/v2/models/affine/infer",
                json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
            )
            assert response.json()["outputs"][0]["data"] == [0.5, -1.0, 2.0]
            scrape = client.get("/metrics").text
            assert sample_value(scrape, "edgeaigc_requests_total", model="affine", code="200", served_by="cloud") == 1
            assert sample_value(scrape, "edgeaigc_memory_budget_bytes") == 64 * 2**20
    finally:
        stderr = stop_gracefully(process)
    assert process.returncode == 0, stderr


def test_the_server_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, edgeaigc.inference.server.cli, edgeaigc.inference.server.routes; "
        "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
