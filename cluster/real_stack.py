"""The test bed on a real node: a local cluster with real node(s), the chart installed there, a fleet.

What the chaos soak (and anything else that needs the whole system running for real) stands on:
``edgeaigc cluster up --real-nodes 1`` in a directory of its own, the Helm chart installed with
``charts/edgeaigc/ci/real-node-values.yaml`` (operator, gateway and cloud server as real containers
on the real node), an HTTP server on the host's cluster address that the model pods fetch the ONNX
file from (as ``examples/real-node/`` names it), and the fleet of ``examples/real-node/``.
Everything is torn down on exit. Traffic stays on this machine (198.18.0.0/15).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import http.server
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.cluster import network
from edgeaigc.cluster.certificate import make_certificate, secret_json, tls_secret
from edgeaigc.cluster.components import ensure_helm, run_helm
from edgeaigc.cluster.kubectl import KubectlFailed, kubectl
from edgeaigc.cluster.local import ClusterError, ClusterState, down, up, using_cluster_directory

ProgressFn = Callable[[str], None]

#: Where the example's InferenceModel fetches its file from (examples/real-node/).
MODEL_SERVER_PORT = 8088
RELEASE = "edgeaigc"
DETECTOR = "det-yolox-nano"
NODE = "pi-real-0"


def repo_path(*parts: str) -> Path:
    """A file of the source checkout the package is installed from (editable)."""
    path = Path(__file__).resolve().parents[1].joinpath(*parts)
    if not path.exists():
        raise ClusterError(f"{path} not found: run from a source checkout (pip install -e .)")
    return path


@dataclass
class RealStack:
    """A running test bed: the cluster, the namespace the chart and the fleet are in."""

    state: ClusterState
    namespace: str
    helm: Path
    helm_home: Path
    camera_token_file: Path | None = None
    """The token of the fleet's camera-0 (the values turn camera authentication on)."""
    camera_token_files: dict[str, Path] = dataclasses.field(default_factory=dict)
    """Camera name -> the file holding its token (every camera of :func:`make_secrets`)."""

    def kubectl(self, *arguments: str, stdin: str | None = None, timeout_s: float = 120) -> str:
        """kubectl's output; :class:`ClusterError` (with what kubectl said) when it fails."""
        try:
            return kubectl(self.state.kubeconfig, *arguments, stdin=stdin, timeout_s=timeout_s)
        except KubectlFailed as error:
            raise ClusterError(str(error)) from error

    def pods(self, selector: str) -> list[dict[str, Any]]:
        output = self.kubectl("get", "pods", "-n", self.namespace, "-l", selector, "-o", "json")
        return list(json.loads(output)["items"])

    def run_helm(self, *arguments: str, timeout_s: float = 330) -> str:
        result = run_helm(self.helm, self.state.kubeconfig, self.helm_home, *arguments, timeout_s=timeout_s)
        if result.returncode != 0:
            raise ClusterError(f"helm {' '.join(arguments)} failed: {result.stderr.strip()}")
        return result.stdout

    def gateway_service_url(self) -> str:
        """The gateway's Service (a ClusterIP kube-proxy routes on the host too): survives pod restarts."""
        name = f"{RELEASE}-gateway"
        ip = self.kubectl("get", "service", name, "-n", self.namespace, "-o", "jsonpath={.spec.clusterIP}")
        port = self.kubectl("get", "service", name, "-n", self.namespace, "-o", "jsonpath={.spec.ports[0].port}")
        return f"http://{ip}:{port}"


def pod_ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(status.get("ready") for status in statuses)


def fleet_documents(model_url: str, model_file: Path) -> list[dict[str, Any]]:
    """``examples/real-node/`` with the detector's artifact pointing at ``model_file`` as served here."""
    documents: list[dict[str, Any]] = []
    for path in sorted(repo_path("examples", "real-node").glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    for document in documents:
        if document["kind"] == "InferenceModel" and document["metadata"]["name"] == DETECTOR:
            document["spec"]["artifact"] = {"url": model_url, "sha256": digest}
    return documents


@contextlib.contextmanager
def _serving_directory(directory: Path) -> Iterator[str]:
    """A real HTTP server on the host's cluster address, where the model pods fetch their files from."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # a line per model download on the command's output is noise

    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer((network.HOST_ADDRESS, MODEL_SERVER_PORT), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{network.HOST_ADDRESS}:{MODEL_SERVER_PORT}"
    finally:
        server.shutdown()
        server.server_close()


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 2.0) -> Any:
    """``condition()``'s first truthy value within ``timeout_s``; :class:`ClusterError` naming ``what`` if none."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired, OSError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def make_secrets(stack: RealStack, cluster_directory: Path, cameras: tuple[str, ...] = ("camera-0",)) -> None:
    """The Secrets the values files name, as ``edgeaigc cluster certificate`` makes them: the cloud's TLS, the
    gateways' client certificate (mutual TLS) from the same data-plane CA, and a token per camera (also
    written to ``<cluster directory>/<camera>.token`` for the camera processes)."""
    names = [f"*.{stack.namespace}.svc"]
    for secret_name, common_name in (("edgeaigc-tls", "edgeaigc-tls"), ("edgeaigc-gateway-client-tls", "gateway")):
        pem = make_certificate(cluster_directory, names, common_name)
        stack.kubectl(
            "apply", "--server-side", "-f", "-", stdin=secret_json(tls_secret(secret_name, stack.namespace, *pem))
        )
    literals = []
    for camera in cameras:
        token_file = cluster_directory / f"{camera}.token"
        token_file.write_text(secrets.token_hex(24) + "\n")
        stack.camera_token_files[camera] = token_file
        literals.append(f"--from-literal={camera}={token_file.read_text().strip()}")
    stack.kubectl("create", "secret", "generic", "edgeaigc-camera-tokens", "-n", stack.namespace, *literals)
    stack.camera_token_file = stack.camera_token_files.get("camera-0")


def install_chart(stack: RealStack, values: list[Path], progress: ProgressFn) -> None:
    """The chart on the real node(s), with ``real-node-values.yaml`` and then ``values`` (helm install --wait)."""
    progress("installing the chart on the real node (helm install --wait)")
    value_files = [repo_path("charts", "edgeaigc", "ci", "real-node-values.yaml"), *values]
    stack.run_helm(
        "install", RELEASE, str(repo_path("charts", "edgeaigc")), "-n", stack.namespace,
        *(argument for path in value_files for argument in ("-f", str(path))),
        "--wait", "--timeout=300s",
    )  # fmt: skip


@contextlib.contextmanager
def real_cluster(
    files: list[Path],
    *,
    namespace: str = "edge-real",
    progress: ProgressFn = print,
    workdir: Path | None = None,
    real_cloud_node: bool = False,
) -> Iterator[tuple[RealStack, dict[str, str]]]:
    """A cluster with one real node (and a real cloud node with ``real_cloud_node``), a namespace (Pod
    Security "restricted") and ``files`` served over HTTP on the host's cluster address; yields the stack
    and each file's URL by name. Torn down on exit."""
    base = Path(workdir or tempfile.mkdtemp(prefix="edgeaigc-real-stack-")).resolve()
    # The cluster under a short path of its own: containerd's sockets live inside it, and a unix socket's
    # path is limited to ~100 characters (a pytest tmp_path is longer).
    directory, name = Path(tempfile.mkdtemp(prefix="edgeaigc-rs-")) / "cluster", f"real-stack-{os.getpid()}"
    served = base / "files"
    served.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, served / file.name)
    with using_cluster_directory(directory):
        try:
            state = up(name, progress=progress, timeout_s=120, real_nodes=1, real_cloud_node=real_cloud_node)
        except ClusterError:
            down(name, progress=lambda _: None)
            raise
    try:
        stack = RealStack(state, namespace, ensure_helm(progress), base / "helm")
        with _serving_directory(served) as base_url:
            stack.kubectl("create", "namespace", namespace)
            stack.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
            yield stack, {file.name: f"{base_url}/{file.name}" for file in files}
    finally:
        with using_cluster_directory(directory):
            down(name, progress=progress)
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


@contextlib.contextmanager
def real_stack(
    model_file: Path,
    *,
    namespace: str = "edge-real",
    values: list[Path] | None = None,
    progress: ProgressFn = print,
    workdir: Path | None = None,
) -> Iterator[RealStack]:
    """The whole test bed: :func:`real_cluster`, the chart installed on the real node, the fleet applied.

    ``model_file``: the detector's ONNX file (YOLOX-Nano from ../shared, or one the caller built).
    """
    with real_cluster([model_file], namespace=namespace, progress=progress, workdir=workdir) as (stack, urls):
        make_secrets(stack, stack.state.directory)
        install_chart(stack, values or [], progress)
        progress("applying the fleet of examples/real-node/")
        documents = fleet_documents(urls[model_file.name], model_file)
        stack.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(documents))
        yield stack
