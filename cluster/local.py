"""Start and stop the local control plane: processes, ports, readiness, kubeconfig, fake nodes.

State lives in one directory (default ``$EDGEAIGC_CACHE/clusters/<name>``): ``pki/``,
``etcd/``, ``prometheus/`` (see :mod:`.prometheus`), ``logs/<component>.log``, ``state.json``
(ports and process ids) and ``kubeconfig``. ``down`` stops every process recorded there and
removes the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.cluster import network, realnode
from edgeaigc.cluster import prometheus as prom
from edgeaigc.cluster.components import Binaries, binaries, cache_dir, ensure_binaries
from edgeaigc.cluster.kubectl import KubectlFailed, run_kubectl
from edgeaigc.cluster.kubectl import kubectl as kubectl_output
from edgeaigc.cluster.pki import write_pki

DEFAULT_NAME = "edgeaigc"
#: Service ClusterIPs (kind's size, in the benchmarking range: see :mod:`.network`); its first address is the
#: ``kubernetes`` Service, in the API server's certificate (:mod:`.pki`).
SERVICE_CIDR = network.SERVICE_CIDR
#: Label kwok selects the nodes it plays by, and the tier label the operator schedules by.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
TIER_LABEL = "edgeaigc.io/tier"


class ClusterError(RuntimeError):
    """The local cluster could not start or be reached; the message says which component and why."""


def cluster_dir(name: str = DEFAULT_NAME) -> Path:
    return Path(os.environ.get("EDGEAIGC_CLUSTER_DIR", cache_dir() / "clusters" / name))


@contextlib.contextmanager
def using_cluster_directory(directory: Path) -> Iterator[None]:
    """Within the block, clusters live in ``directory`` (``EDGEAIGC_CLUSTER_DIR``), e.g. a real-node cluster beside
    a test session's kwok cluster."""
    previous = os.environ.get("EDGEAIGC_CLUSTER_DIR")
    os.environ["EDGEAIGC_CLUSTER_DIR"] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("EDGEAIGC_CLUSTER_DIR", None)
        else:
            os.environ["EDGEAIGC_CLUSTER_DIR"] = previous


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass
class ClusterState:
    """What ``up`` started, as written to ``state.json``."""

    directory: Path
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Names of the real nodes (kubelet + containerd) of the cluster; empty for kwok only.
    real_nodes: list[str] = dataclasses.field(default_factory=list)
    #: The command line of each component, so that one can be restarted (:func:`restart_component`).
    commands: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def prometheus_url(self) -> str | None:
        """Base URL of the cluster's Prometheus (None if it was started without)."""
        port = self.ports.get("prometheus")
        # With real nodes it listens where their pods reach it (see `up`).
        host = network.HOST_ADDRESS if self.real_nodes else "127.0.0.1"
        return f"http://{host}:{port}" if port else None

    def save(self) -> None:
        document = {"ports": self.ports, "pids": self.pids, "real_nodes": self.real_nodes, "commands": self.commands}
        (self.directory / "state.json").write_text(json.dumps(document, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        path = directory / "state.json"
        if not path.exists():
            return None
        document = json.loads(path.read_text())
        return cls(
            directory,
            ports=document["ports"],
            pids=document["pids"],
            real_nodes=document.get("real_nodes", []),
            commands=document.get("commands", {}),
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(state: ClusterState, component: str, command: list[str]) -> None:
    logs = state.directory / "logs"
    logs.mkdir(exist_ok=True)
    with (logs / f"{component}.log").open("ab") as log:
        # A new session so that `down` (and Ctrl-C in the caller) stop the whole component.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state.pids[component] = process.pid
    state.commands[component] = command
    state.save()


def kill_component(state: ClusterState, component: str) -> None:
    """SIGKILL a component's whole process group, as a crash would (its recorded pid stays until restarted)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state.pids[component], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(state.pids[component]):
        time.sleep(0.05)


def restart_component(state: ClusterState, component: str, timeout_s: float = 60.0) -> None:
    """Start a killed component again with its recorded command line and wait until it is healthy.

    Raises:
        ClusterError: it is still running, its command was not recorded, or it did not become ready.
    """
    if _alive(state.pids.get(component, 0) or 0):
        raise ClusterError(f"{component} is still running (pid {state.pids[component]})")
    command = state.commands.get(component)
    if not command:
        raise ClusterError(f"no command recorded for {component} (a cluster started by an older edgeaigc)")
    _start(state, component, command)
    ready = _readiness(state).get(component)
    if ready is not None:
        _wait(state, component, ready, timeout_s)


def _readiness(state: ClusterState) -> dict[str, Callable[[], bool]]:
    """How to tell that a restarted component serves again."""
    etcd = f"http://127.0.0.1:{state.ports.get('etcd')}/health"
    return {
        "etcd": lambda: _http_ok(etcd),
        "apiserver": lambda: _https_ok(state, f"{state.server}/readyz"),
        "prometheus": lambda: _http_ok(f"{state.prometheus_url}/-/ready"),
        "kwok": lambda: _http_ok(f"http://127.0.0.1:{state.ports.get('kwok')}/healthz"),
    }


def _log_tail(state: ClusterState, component: str, lines: int = 12) -> str:
    path = state.directory / "logs" / f"{component}.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait(state: ClusterState, component: str, ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(state.pids[component]):
            raise ClusterError(f"{component} exited during start-up:\n{_log_tail(state, component)}")
        with contextlib.suppress(OSError, urllib.error.URLError, ssl.SSLError):
            if ready():
                return
        time.sleep(0.2)
    raise ClusterError(f"{component} not ready after {timeout_s:.0f} s:\n{_log_tail(state, component)}")


def _https_ok(state: ClusterState, url: str) -> bool:
    pki = state.directory / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _self_signed_ok(url: str) -> bool:
    """Health of controller-manager and scheduler: loopback, with their own self-signed certs."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)


def write_kubeconfig(state: ClusterState) -> None:
    pki = state.directory / "pki"
    config = realnode.kubeconfig_document(
        state.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key", "edgeaigc-admin"
    )
    state.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    state.kubeconfig.chmod(0o600)


def default_nodes_file() -> Path:
    return Path(str(resources.files("edgeaigc.cluster").joinpath("nodes.yaml")))


def node_manifests(nodes_file: Path) -> list[dict[str, Any]]:
    """Node objects (kwok-managed) from a nodes file; groups expand with ``count`` and ``{i}``."""
    document = yaml.safe_load(nodes_file.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise ClusterError(f"{nodes_file}: expected a mapping with a 'nodes' list")
    manifests = []
    for index, group in enumerate(document["nodes"]):
        if not isinstance(group, dict) or "name" not in group or "capacity" not in group:
            raise ClusterError(f"{nodes_file}: nodes[{index}] needs 'name' and 'capacity'")
        count = int(group.get("count", 1))
        for i in range(count):
            capacity = {key: str(value) for key, value in group["capacity"].items()}
            node_name = str(group["name"]).replace("{i}", str(i))
            # A kubelet labels its node with its hostname; kwok does not, and pods pin to nodes by it.
            labels = {"kubernetes.io/hostname": node_name}
            labels.update({str(k): str(v) for k, v in (group.get("labels") or {}).items()})
            manifests.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": node_name,
                        "labels": labels,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                    },
                    "spec": {"taints": group.get("taints", [])},
                    "status": {
                        "capacity": capacity,
                        "allocatable": capacity,
                        # kwok keeps what is set here; kubectl shows it (-o wide).
                        "nodeInfo": {
                            "architecture": str((group.get("labels") or {}).get("kubernetes.io/arch", "amd64")),
                            "operatingSystem": "linux",
                        },
                    },
                }
            )
    return manifests


def up(
    name: str = DEFAULT_NAME,
    nodes_file: Path | None = None,
    progress: Callable[[str], None] = print,
    timeout_s: float = 60.0,
    prometheus: bool | None = None,
    scrape_interval_s: float = prom.DEFAULT_SCRAPE_INTERVAL_S,
    real_nodes: int = 0,
    network_policy: bool = True,
    real_cloud_node: bool = False,
) -> ClusterState:
    """Build (once) and start the control plane, create the fake nodes; return its state.

    Args:
        real_nodes: also start this many real nodes (kubelet, containerd, runc, CNI; see
            :mod:`.realnode`) running the project's images, built here first if needed.
        prometheus: also run Prometheus (:mod:`.prometheus`); None runs it when its binary is
            installed and says so when it is not, True fails without it.
        scrape_interval_s: Prometheus's scrape interval.
        network_policy: with real nodes, also run kube-router's NetworkPolicy controller so that
            NetworkPolicies are enforced (False: they are ignored, as the CNI bridge alone does).
        real_cloud_node: with real nodes, also a real cloud node (``cloud-real-0``, tier ``cloud``) in
            place of the fake cloud nodes: the cloud replicas misses go to then run for real.
    """
    if real_cloud_node and not real_nodes:
        raise ClusterError("a real cloud node needs real edge nodes too (--real-nodes N)")
    if prometheus is None:
        prometheus = prom.binary() is not None
        if not prometheus:
            progress(f"no prometheus binary: starting without Prometheus ({prom.INSTALL_HINT})")
    elif prometheus and prom.binary() is None:
        raise ClusterError(f"Prometheus was asked for but no binary was found: {prom.INSTALL_HINT}")
    paths: Binaries = ensure_binaries(progress, real_nodes=real_nodes > 0)
    directory = cluster_dir(name)
    existing = ClusterState.load(directory)
    if existing and all(_alive(pid) for pid in existing.pids.values()):
        progress(f"cluster {name!r} is already running ({existing.server})")
        return existing
    if existing:
        down(name, progress=lambda _: None)
    try:
        nodes = realnode.plan_real_nodes(directory, real_nodes, cloud=real_cloud_node) if real_nodes else []
    except realnode.RealNodeError as error:
        raise ClusterError(str(error)) from error
    archives = _real_node_images(progress) if nodes else []
    directory.mkdir(parents=True, exist_ok=True)
    write_pki(directory / "pki")
    pki = directory / "pki"
    state = ClusterState(directory, real_nodes=[node.name for node in nodes])
    components = ["etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"]
    for component in components + (["prometheus"] if prometheus else []):
        state.ports[component] = free_port()
    for node in nodes:
        state.ports[f"kubelet_{node.name}"] = free_port()
        state.ports[f"kubelet_healthz_{node.name}"] = free_port()
    if nodes:
        # A fixed port on the host's cluster address, so fleets (examples/real-node/) can name it.
        if prometheus:
            state.ports["prometheus"] = network.PROMETHEUS_PORT
        state.ports["kube_proxy_healthz"] = free_port()
        state.ports["kube_proxy_metrics"] = free_port()
        state.ports["kube_router_health"] = free_port()
        # Pods reach the API server through the `kubernetes` Service, whose endpoint is the address it
        # advertises: one of the host's dummy-interface addresses, not loopback.
        try:
            realnode.setup_host(nodes)
        except realnode.RealNodeError as error:
            raise ClusterError(str(error)) from error
    state.save()
    started = time.monotonic()

    progress("starting etcd")
    etcd_url = f"http://127.0.0.1:{state.ports['etcd']}"
    peer_url = f"http://127.0.0.1:{state.ports['etcd_peer']}"
    _start(
        state,
        "etcd",
        [
            str(paths.etcd),
            "--name=edgeaigc",
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=edgeaigc={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    _wait(state, "etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout_s)

    progress("starting kube-apiserver")
    _start(
        state,
        "apiserver",
        [
            str(paths.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={'0.0.0.0' if nodes else '127.0.0.1'}",
            f"--advertise-address={network.HOST_ADDRESS if nodes else '127.0.0.1'}",
            f"--secure-port={state.ports['apiserver']}",
            # kubectl logs/exec on real nodes: the API server calls their kubelets as the admin.
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            # Real nodes are reached by their InternalIP (their names are in no resolver).
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Room for a Service per (model, edge node): a /24 (254 ClusterIPs) fills up at 100 nodes x 20
            # models, and the API server answers "500 ... failed to allocate a serviceIP: range is full".
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            # EDGEAIGC_APISERVER_VERBOSITY=3 logs every request with its status code (httplog).
            f"-v={os.environ.get('EDGEAIGC_APISERVER_VERBOSITY', '0')}",
        ],
    )
    _wait(state, "apiserver", lambda: _https_ok(state, f"{state.server}/readyz"), timeout_s)
    write_kubeconfig(state)

    progress("starting kube-controller-manager and kube-scheduler")
    _start(
        state,
        "controller_manager",
        [
            str(paths.kube_controller_manager),
            f"--kubeconfig={state.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['controller_manager']}",
            "--leader-elect=false",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--profiling=false",
        ],
    )
    _start(
        state,
        "scheduler",
        [
            str(paths.kube_scheduler),
            f"--kubeconfig={state.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.ports['scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    progress("starting kwok (the fake kubelets)")
    _start(
        state,
        "kwok",
        [
            str(paths.kwok),
            f"--kubeconfig={state.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--config={paths.kwok_stages}",
            f"--config={resources.files('edgeaigc.cluster') / 'kwok-stages.yaml'}",
            f"--server-address=127.0.0.1:{state.ports['kwok']}",
            # Fake pods and nodes get addresses of the benchmarking range, never one of a real network.
            f"--cidr={network.KWOK_POD_CIDR.replace('.0/', '.1/')}",
            f"--node-ip={network.KWOK_NODE_IP}",
        ],
    )
    _wait(
        state,
        "controller_manager",
        lambda: _self_signed_ok(f"https://127.0.0.1:{state.ports['controller_manager']}/healthz"),
        timeout_s,
    )
    _wait(
        state, "scheduler", lambda: _self_signed_ok(f"https://127.0.0.1:{state.ports['scheduler']}/healthz"), timeout_s
    )
    _wait(state, "kwok", lambda: _http_ok(f"http://127.0.0.1:{state.ports['kwok']}/healthz"), timeout_s)

    manifests = node_manifests(nodes_file or default_nodes_file())
    if real_cloud_node:
        # The real cloud node plays the cloud: a fake one beside it would get the cloud pods it is drawn to.
        manifests = [m for m in manifests if m["metadata"].get("labels", {}).get(TIER_LABEL) != "cloud"]
    create_nodes(state, paths, manifests, progress)
    if nodes:
        runtime = realnode.RealNodeRuntime(
            directory=directory,
            pki=pki,
            server=state.server,
            kubelet=paths.kubelet,
            kube_proxy=paths.kube_proxy,
            coredns=paths.coredns,
            kube_router=paths.kube_router if network_policy else None,
            ports=state.ports,
            launch=lambda component, command: _start(state, component, command),
            wait=lambda component, ready, timeout: _wait(state, component, ready, timeout),
            node_ready=lambda node: _node_ready(state, paths, node),
            progress=progress,
        )
        try:
            realnode.start_real_nodes(nodes, runtime, archives, max(timeout_s, 120.0))
        except realnode.RealNodeError as error:
            raise ClusterError(str(error)) from error
    if prometheus:
        progress(f"starting Prometheus (scrape interval {prom.duration(scrape_interval_s)})")
        try:
            # With real nodes, the operator's pod reaches Prometheus on the host's cluster address.
            listen = network.HOST_ADDRESS if nodes else "127.0.0.1"
            command = prom.prepare(directory, state.ports["prometheus"], scrape_interval_s, listen_address=listen)
        except prom.PrometheusError as error:
            raise ClusterError(str(error)) from error
        _start(state, "prometheus", command)
        _wait(state, "prometheus", lambda: _http_ok(f"{state.prometheus_url}/-/ready"), timeout_s)
        if nodes:
            # Prometheus finds the chart's pods on real nodes by their scrape annotations, as a user's would.
            _start(
                state,
                "pod_targets",
                [
                    sys.executable,
                    "-m",
                    "edgeaigc.cluster.pod_targets",
                    f"--kubeconfig={state.kubeconfig}",
                    f"--cluster-dir={directory}",
                    *(f"--real-node={node.name}" for node in nodes),
                ],
            )
        progress(f"Prometheus at {state.prometheus_url}")
    progress(f"cluster {name!r} up in {time.monotonic() - started:.1f} s; KUBECONFIG={state.kubeconfig}")
    return state


def _real_node_images(progress: Callable[[str], None]) -> list[Path]:
    """OCI archives of the images real nodes run (inference, operator, pause), built here if needed."""
    from edgeaigc.cluster import images

    archives = images.ensure_images(["inference", "operator", "pause"], [images.host_arch()], progress)
    return list(archives.values())


NODES_PER_APPLY = 100
"""Fake nodes created per ``kubectl apply``: one apply of 1000 nodes outlasts kubectl's 60-s timeout."""


def create_nodes(
    state: ClusterState, paths: Binaries, manifests: list[dict[str, Any]], progress: Callable[[str], None]
) -> None:
    progress(f"creating {len(manifests)} fake nodes")
    for start in range(0, len(manifests), NODES_PER_APPLY):
        batch = manifests[start : start + NODES_PER_APPLY]
        kubectl(state, paths, ["apply", "--server-side", "-f", "-"], yaml.safe_dump_all(batch))
        if len(manifests) > NODES_PER_APPLY:
            progress(f"  {start + len(batch)} / {len(manifests)} fake nodes created")


def _node_ready(state: ClusterState, paths: Binaries, node: str) -> bool:
    jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
    result = run_kubectl(
        state.kubeconfig, "get", "node", node, "-o", f"jsonpath={jsonpath}", timeout_s=30, binary=paths.kubectl
    )
    return result.stdout.strip() == "True"


def kubectl(state: ClusterState, paths: Binaries, arguments: list[str], stdin: str | None = None) -> str:
    try:
        return kubectl_output(state.kubeconfig, *arguments, stdin=stdin, timeout_s=60, binary=paths.kubectl)
    except KubectlFailed as error:
        raise ClusterError(str(error)) from error


def down(name: str = DEFAULT_NAME, progress: Callable[[str], None] = print, keep_files: bool = False) -> bool:
    """Stop every process of the cluster and remove its directory; False if nothing was running."""
    directory = cluster_dir(name)
    state = ClusterState.load(directory)
    if state is None:
        progress(f"no cluster {name!r} at {directory}")
        return False
    # Reverse start order: the kubelets and controllers first, etcd last.
    for component in reversed(list(state.pids)):
        pid = state.pids[component]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in state.pids.values()):
        time.sleep(0.1)
    for pid in state.pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    # Real nodes leave containers, shims, mounts, network namespaces, bridges and cgroups behind.
    realnode.stop_real_nodes(directory, binaries().kube_proxy, progress)
    if not keep_files:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    progress(f"cluster {name!r} stopped")
    return True
