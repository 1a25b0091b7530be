"""The commands the operator writes into inference pods, run as the pod's containers run them.

A kwok pod never starts its containers, so nothing else would notice a container argument that
the CLI does not take (``serve --model NAME`` was once read as ``--model-repository NAME`` and
every replica crash-looped). Here the init container's and the server container's arguments,
exactly as the builder writes them, run as real processes: fetch-model from a real HTTP server,
then the model server over what it fetched, probed on the readiness path of the manifest.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeaigc.operator import builders
from edgeaigc.operator import constants as c
from tests.component.builders import affine_model
from tests.component.conftest import free_port, wait_until_ready

MODEL = "affine-v1"
POLICY = {"metadata": {"name": "city", "namespace": "traffic", "uid": "0000"}}


@pytest.fixture()
def artifact_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real HTTP server on 127.0.0.1 holding one ONNX file: (its URL, its sha256)."""
    source = tmp_path / "source"
    source.mkdir()
    affine_model(source / "affine.onnx")
    digest = hashlib.sha256((source / "affine.onnx").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/affine.onnx", digest
    finally:
        server.shutdown()
        server.server_close()


def _in_sandbox(args: list[str], models_dir: Path, port: int) -> list[str]:
    """A container's arguments with the pod's paths and port mapped onto this test's (nothing else changed)."""
    mapped = [arg.replace(builders.MODEL_REPOSITORY, str(models_dir)) for arg in args]
    return [arg if arg != str(c.INFERENCE_PORT) else str(port) for arg in mapped]


def _run_cli(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    # The images' entry point is `edgeaigc`; `python -m edgeaigc.cli` is the same parser.
    return subprocess.Popen([sys.executable, "-m", "edgeaigc.cli", *args], text=True, **kwargs)


def test_the_edge_pod_fetches_its_model_and_serves_it(tmp_path: Path, artifact_server: tuple[str, str]) -> None:
    url, digest = artifact_server
    deployment = builders.build_edge_deployment(
        POLICY,
        MODEL,
        "pi-0",
        "pi-0",
        cpu_m=500,
        memory_mi=256,
        image="edgeaigc/inference:test",
        artifact={"url": url, "sha256": digest},
        model_size_mib=1.0,
    )
    pod = deployment["spec"]["template"]["spec"]
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    port = free_port()

    fetch = _run_cli(_in_sandbox(pod["initContainers"][0]["args"], models_dir, port), stderr=subprocess.PIPE)
    _, fetch_err = fetch.communicate(timeout=60)
    assert fetch.returncode == 0, fetch_err
    assert hashlib.sha256((models_dir / MODEL / "model.onnx").read_bytes()).hexdigest() == digest

    container = pod["containers"][0]
    server = _run_cli(
        [*_in_sandbox(container["args"], models_dir, port), "--host", "127.0.0.1", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url_base = f"http://127.0.0.1:{port}"
        wait_until_ready(url_base, server)
        probe = container["readinessProbe"]["httpGet"]["path"]
        assert httpx.get(f"{url_base}{probe}", timeout=10).status_code == 200
        answer = httpx.post(
            f"{url_base}/v2/models/{MODEL}/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [0.5, -1.0, 2.0]
    finally:
        server.terminate()
        server.communicate(timeout=20)


def test_the_cloud_pod_serves_its_model(tmp_path: Path) -> None:
    deployment = builders.build_cloud_deployment(POLICY, MODEL, image="edgeaigc/inference:test")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    models_dir = tmp_path / "models"
    affine_model(models_dir / MODEL / "model.onnx")
    port = free_port()
    server = _run_cli(
        [*_in_sandbox(container["args"], models_dir, port), "--host", "127.0.0.1", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server)
        probe = container["readinessProbe"]["httpGet"]["path"]
        assert httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=10).status_code == 200
    finally:
        server.terminate()
        server.communicate(timeout=20)


def test_serve_refuses_a_named_model_that_is_not_there(tmp_path: Path) -> None:
    affine_model(tmp_path / "other" / "model.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "serve", "--model-repository", str(tmp_path), "--model", MODEL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"model '{MODEL}' is not in the repository" in result.stderr


def test_options_are_never_abbreviated(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "serve", "--model-repo", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --model-repo" in result.stderr or "required: --model-repository" in result.stderr


def test_the_cloud_pod_serves_https_from_its_tls_secret(tmp_path: Path) -> None:
    """The operator's cloud replica with a TLS Secret: its arguments, with the Secret's files where the pod
    mounts them, serve HTTPS that a client of the Secret's CA verifies, on the manifest's probe scheme."""
    from edgeaigc.cluster.certificate import make_certificate, write_files

    deployment = builders.build_cloud_deployment(POLICY, MODEL, image="edgeaigc/inference:test", tls_secret="tls")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    models_dir = tmp_path / "models"
    affine_model(models_dir / MODEL / "model.onnx")
    secret_dir = tmp_path / "secret"
    write_files(secret_dir, *make_certificate(tmp_path, ["127.0.0.1"], "cloud"))
    port = free_port()
    args = [arg.replace(c.TLS_MOUNT_PATH, str(secret_dir)) for arg in _in_sandbox(container["args"], models_dir, port)]
    server = _run_cli(
        [*args, "--host", "127.0.0.1", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        probe = container["readinessProbe"]["httpGet"]
        url = f"{probe['scheme'].lower()}://127.0.0.1:{port}{probe['path']}"
        verify = ssl.create_default_context(cafile=secret_dir / "ca.crt")
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[1]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=5, verify=verify).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{url} not ready within 30 s"
            time.sleep(0.05)
        assert url.startswith("https://")
    finally:
        server.terminate()
        server.communicate(timeout=20)
