"""Real Kubernetes nodes beside the kwok ones: kubelet + containerd + runc + CNI, on this machine.

A real node runs real containers of the project's images (built here, imported into its
containerd, never pulled) under real CFS quotas. It looks like a Raspberry Pi to the scheduler:
the labels of the kwok Pis, and allocatable CPU and memory reserved down to Pi-like figures, so
the CPU limits the operator writes are felt by real processes.

Per real node ``i`` (all under ``<cluster dir>/nodes/<name>/``): a containerd of its own (a
kubelet removes pods its runtime holds but it does not know, so two kubelets cannot share one),
a CNI ``bridge`` + ``host-local`` network on ``198.18.(i+1).0/24``, a kubelet whose cgroups live
under ``/edgeaigc-<name>`` in every controller, with its own root, pod-log and certificate
directories and a client certificate as ``system:node:<name>``. Once per cluster: the dummy
interface with the host's addresses, kube-proxy (iptables) so pods reach Services, CoreDNS so
they resolve ``<service>.<namespace>.svc``, and kube-router's NetworkPolicy controller so
NetworkPolicies hold (the CNI bridge ignores them); all host processes, like the control plane.
See :mod:`.network` for the address plan and ``docs/real-nodes.md`` for the facts behind the
settings (hybrid cgroups, runc not crun, ``restrict_oom_score_adj``).

Pure renderers (``*_config``) build every configuration file; :func:`start_real_nodes` and
:func:`stop_real_nodes` run and clean up the processes, mounts, interfaces and cgroups.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.cluster import network
from edgeaigc.cluster.pki import write_node_credentials

#: Debian's CNI plugins (containernetworking-plugins).
CNI_BIN_DIR = Path("/usr/lib/cni")
#: Debian packages a real node needs, with the binaries that prove each is there.
REQUIRED_BINARIES = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip": "iproute2",
    # kube-router's NetworkPolicy controller keeps the pods a policy selects in ipsets.
    "ipset": "ipset",
}
#: Names of the ipsets kube-router's NetworkPolicy controller creates (removed at tear-down).
KUBE_ROUTER_IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")
#: What a real node's labels say: the kwok Pis' labels (the operator and chart schedule by them).
PI_LABELS = {
    "node.kubernetes.io/instance-type": "raspberry-pi-4",
    "edgeaigc.io/tier": "edge",
    "edgeaigc.io/real": "true",
}
#: What a real cloud node's labels say (``--real-cloud-node``): the tier the operator's cloud replicas
#: and the chart's cloud server are scheduled on.
CLOUD_LABELS = {"edgeaigc.io/tier": "cloud", "edgeaigc.io/real": "true"}
CLOUD_NODE_NAME = "cloud-real-0"
#: The real cloud node may use the whole machine (it shares it with everything else anyway); the memory
#: holds a replica per model of a small catalogue.
CLOUD_ALLOCATABLE_CPU_MILLICORES = 2000
CLOUD_ALLOCATABLE_MEMORY_MIB = 6144
#: Pi-like allocatable figures on this machine: what the scheduler may give pods on a real node.
DEFAULT_ALLOCATABLE_CPU_MILLICORES = 1000
DEFAULT_ALLOCATABLE_MEMORY_MIB = 2048
#: Kept from pods for eviction (the kubelet subtracts it from allocatable too).
EVICTION_MEMORY_MIB = 100
#: The pod sandbox image (built here: see :mod:`.images`).
PAUSE_IMAGE = "localhost/edgeaigc/pause:local"


class RealNodeError(RuntimeError):
    """A real node could not start or be cleaned up; the message says which part and why."""


@dataclasses.dataclass(frozen=True)
class RealNode:
    """One real node of the local cluster: its name, index (address plan) and directory."""

    name: str
    index: int
    directory: Path
    allocatable_cpu_millicores: int = DEFAULT_ALLOCATABLE_CPU_MILLICORES
    allocatable_memory_mib: int = DEFAULT_ALLOCATABLE_MEMORY_MIB
    tier: str = "edge"
    """``edge`` (a Pi) or ``cloud`` (where misses go)."""

    @property
    def labels(self) -> dict[str, str]:
        return dict(CLOUD_LABELS if self.tier == "cloud" else PI_LABELS)

    @property
    def address(self) -> str:
        return network.node_address(self.index)

    @property
    def pod_subnet(self) -> str:
        return network.pod_subnet(self.index)

    @property
    def bridge(self) -> str:
        return network.bridge_name(self.index)

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/edgeaigc-{self.name}"

    @property
    def kubelet_root(self) -> Path:
        return self.directory / "kubelet"


def real_node_names(count: int) -> list[str]:
    """Names of ``count`` real nodes: ``pi-real-0``, ``pi-real-1``, …"""
    if not 1 <= count <= network.MAX_REAL_NODES:
        raise ValueError(f"--real-nodes must be 1..{network.MAX_REAL_NODES}, not {count}")
    return [f"pi-real-{i}" for i in range(count)]


# -- configuration renderers (pure) ----------------------------------------------------------------


def containerd_config(node: RealNode, pause_image: str = PAUSE_IMAGE) -> str:
    """containerd 1.6 (config version 2): own root, state and socket; CRI through runc and CNI."""
    base = node.directory / "containerd"
    return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
# Plugins this machine has no use for (and that would log errors on start).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{node.containerd_socket}"

[ttrpc]
  address = "{node.containerd_socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # runc cannot lower a sandbox's oom_score_adj to -998 without CAP_SYS_RESOURCE, which this machine
  # lacks ("can't get final child's PID from pipe: EOF"): keep the scores at or above ours.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet uses cgroupfs (it cannot ask containerd 1.6 which driver it has).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{node.directory / "cni"}"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
"""


def cni_config(node: RealNode) -> dict[str, Any]:
    """A bridge network of the node's pod range; the host is its gateway; nothing is masqueraded."""
    return {
        "cniVersion": "1.0.0",
        "name": f"edgeaigc-{node.name}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": True,
                # Traffic stays on this machine: pods are reached by their own addresses.
                "ipMasq": False,
                # A pod that calls a Service whose endpoint is itself (hairpin).
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_subnet}]],
                    # Only the cluster's ranges are routed through the bridge: never a default route.
                    "routes": [{"dst": network.POD_CIDR}, {"dst": network.HOST_CIDR}, {"dst": network.SERVICE_CIDR}],
                    "dataDir": str(node.directory / "cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: RealNode, ca_file: Path, ports: dict[str, int], host_memory_mib: int, host_cpus: int) -> dict:
    """KubeletConfiguration of a Pi-like node on this machine.

    Allocatable is reserved down to the node's Pi-like CPU and memory (``kubeReserved`` takes the
    rest of the machine), so the scheduler and the pods' cgroups see a Pi, not this machine.
    """
    reserved_cpu = max(host_cpus * 1000 - node.allocatable_cpu_millicores, 0)
    reserved_memory = max(host_memory_mib - node.allocatable_memory_mib - EVICTION_MEMORY_MIB, 0)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine mounts cgroup v1 controllers (hybrid layout); kubelet >= 1.35 refuses that by default.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "address": node.address,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet_healthz"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": [network.HOST_ADDRESS],
        "clusterDomain": network.CLUSTER_DOMAIN,
        # No host resolver for pods: names outside the cluster are not ours to resolve.
        "resolvConf": "",
        "podLogsDir": str(node.directory / "pod-logs"),
        "podCIDR": node.pod_subnet,
        "failSwapOn": False,
        "kubeReserved": {"cpu": f"{reserved_cpu}m", "memory": f"{reserved_memory}Mi"},
        "enforceNodeAllocatable": ["pods"],
        "evictionHard": {
            "memory.available": f"{EVICTION_MEMORY_MIB}Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        # Images are imported, never pulled: the kubelet must not garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kube_proxy_config(first_node: str, kubeconfig: Path, ports: dict[str, int]) -> dict[str, Any]:
    """kube-proxy in iptables mode for the pods of every real node (they share this machine's tables)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": network.POD_CIDR,
        "hostnameOverride": first_node,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{ports['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube_proxy_metrics']}",
        # NodePorts only on the host's dummy addresses, never on an interface that leads outside.
        "nodePortAddresses": [network.HOST_CIDR],
        # Leave this machine's conntrack table size alone (a shared VM).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def kube_router_arguments(first_node: str, kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    """kube-router as a NetworkPolicy enforcer only: no BGP routing, no service proxy (kube-proxy has that).

    It enforces policies for the pods whose hostIP is ``first_node``'s address (it takes its node's
    pods as the ones to guard), in this machine's iptables, which every real node shares.
    """
    return [
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={first_node}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        # Needed by the controller: traffic to ClusterIPs is left to kube-proxy's DNAT, then filtered.
        f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        "--enable-ipv6=false",
        f"--health-port={ports['kube_router_health']}",
        "--metrics-port=0",
        "--v=1",
    ]


def corefile(kubeconfig: Path, port: int = 53) -> str:
    """CoreDNS answering for the cluster's names only (nothing is forwarded off this machine)."""
    return f""".:{port} {{
    bind {network.HOST_ADDRESS}
    errors
    kubernetes {network.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 10
}}
"""


def kubeconfig_document(server: str, ca_file: Path, cert: Path, key: Path, user: str) -> dict[str, Any]:
    """A kubeconfig of one cluster (``edgeaigc``) and one user with a client certificate."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edgeaigc", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "edgeaigc", "context": {"cluster": "edgeaigc", "user": user}}],
        "current-context": "edgeaigc",
    }


# -- the machine: interfaces, sysctls, cgroups, mounts ---------------------------------------------


def missing_packages() -> list[str]:
    """Debian packages a real node needs that are not installed (by the binaries they bring)."""
    missing = {package for binary, package in REQUIRED_BINARIES.items() if shutil.which(binary) is None}
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.add("containernetworking-plugins")
    return sorted(missing)


def _run(
    command: Sequence[str], what: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RealNodeError(f"{what} failed ({' '.join(command)}): {(result.stderr or result.stdout).strip()}")
    return result


def setup_host(nodes: Sequence[RealNode]) -> None:
    """The host interface with the host's addresses, forwarding, and bridged traffic through iptables."""
    if _run(["ip", "link", "show", network.HOST_INTERFACE], "ip link show", check=False).returncode != 0:
        # A bridge without ports: this kernel has no dummy interfaces, and nothing may be added to lo.
        _run(["ip", "link", "add", network.HOST_INTERFACE, "type", "bridge"], "creating the host interface")
    addresses = [network.HOST_ADDRESS, *(node.address for node in nodes)]
    present = _run(["ip", "-o", "addr", "show", "dev", network.HOST_INTERFACE], "ip addr show").stdout
    for address in addresses:
        if f" {address}/" not in present:
            _run(["ip", "addr", "add", f"{address}/32", "dev", network.HOST_INTERFACE], f"adding {address}")
    _run(["ip", "link", "set", network.HOST_INTERFACE, "up"], "bringing up the host interface")
    # Fake (kwok) pods have addresses with nothing behind them; a connection there must fail here at
    # once, never follow the default route off this machine.
    for cidr in network.UNREACHABLE_CIDRS:
        _run(["ip", "route", "replace", "unreachable", cidr], f"routing {cidr} as unreachable")
    # Pods on a bridge reach Services through the host's NAT (kube-proxy's DNAT): forward between
    # bridges, and let iptables see bridged traffic so replies between pods of one bridge are un-NATed.
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        path = Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value)


def _cgroup_controllers() -> list[Path]:
    """The mount points of the cgroup v1 controllers (the kubelet makes its cgroups in each)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] == "cgroup":
            mounts.append(Path(fields[4]))
    return mounts


def create_cgroup_root(node: RealNode) -> None:
    """``cgroupRoot`` must exist in every controller before the kubelet starts."""
    for controller in _cgroup_controllers():
        path = controller / node.cgroup_root.lstrip("/")
        path.mkdir(exist_ok=True)
        if (controller / "cpuset.cpus").exists():
            # A new cpuset starts empty: give it its parent's CPUs and memory nodes, or no task can join.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (path / name).read_text().strip():
                    (path / name).write_text((controller / name).read_text())


def remove_cgroup_root(node: RealNode) -> None:
    for controller in _cgroup_controllers():
        root = controller / node.cgroup_root.lstrip("/")
        if not root.exists():
            continue
        # Deepest first: a cgroup can only be removed once its children are.
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def mounts_under(directory: Path) -> list[str]:
    """Mount points below ``directory`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(directory.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Octal escapes (\040 for a space) as the kernel writes them.
        point = re.sub(r"\\(\d{3})", lambda match: chr(int(match.group(1), 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(directory: Path) -> None:
    for point in mounts_under(directory):
        _run(["umount", "--lazy", point], f"unmounting {point}", check=False)


def _pids_of(pattern: str) -> list[int]:
    """Processes whose command line contains ``pattern``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if pattern in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(entry.name))
    return [pid for pid in pids if pid != os.getpid()]


def kill_processes(pattern: str, timeout_s: float = 10) -> None:
    """SIGTERM then SIGKILL every process whose command line names ``pattern``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_of(pattern):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pids_of(pattern):
            time.sleep(0.1)


def _container_pids(node: RealNode) -> list[int]:
    """Processes in the node's pod cgroups (containers that outlived their shim or kubelet)."""
    pids: set[int] = set()
    for controller in _cgroup_controllers():
        root = controller / node.cgroup_root.lstrip("/")
        for procs in root.rglob("cgroup.procs") if root.exists() else []:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return sorted(pids)


def kill_containers(node: RealNode) -> None:
    for _ in range(3):
        pids = _container_pids(node)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _network_namespaces_of(node: RealNode) -> list[str]:
    """The CNI network namespaces (/var/run/netns/cni-*) whose pods are on the node's bridge."""
    names = []
    netns_dir = Path("/var/run/netns")
    for entry in sorted(netns_dir.glob("cni-*")) if netns_dir.exists() else []:
        result = _run(["ip", "-n", entry.name, "-o", "-4", "addr", "show"], "ip addr", check=False)
        prefix = node.pod_subnet.rsplit(".", 1)[0] + "."
        if f"inet {prefix}" in result.stdout or result.returncode != 0:
            names.append(entry.name)
    return names


def remove_network(node: RealNode) -> None:
    """The node's pod network namespaces, veths (they go with them), bridge and IPAM leases."""
    for name in _network_namespaces_of(node):
        _run(["ip", "netns", "delete", name], f"deleting netns {name}", check=False)
    if _run(["ip", "link", "show", node.bridge], "ip link show", check=False).returncode == 0:
        _run(["ip", "link", "delete", node.bridge], f"deleting bridge {node.bridge}", check=False)
    shutil.rmtree(node.directory / "cni-ipam", ignore_errors=True)


def remove_kube_chains() -> None:
    """The ``KUBE-*`` iptables chains the kubelet and kube-proxy leave (the kubelet's KUBE-FIREWALL among
    them, which would go on dropping packets to 127.0.0.0/8 from other sources), and the rules that jump
    to them, in every table, for IPv4 and IPv6."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _run([tool, "-t", table, "-S"], f"{tool} -S", check=False).stdout.splitlines()
            for rule in rules:
                # shlex: kube-router's jump rules carry quoted comments with spaces.
                words = shlex.split(rule)
                if words[:1] == ["-A"] and not words[1].startswith("KUBE-") and "KUBE-" in rule:
                    _run([tool, "-t", table, "-D", *words[1:]], f"{tool} -D", check=False)
            chains = [rule.split()[1] for rule in rules if rule.startswith("-N KUBE-")]
            for chain in chains:
                _run([tool, "-t", table, "-F", chain], f"{tool} -F {chain}", check=False)
            for chain in chains:
                _run([tool, "-t", table, "-X", chain], f"{tool} -X {chain}", check=False)


def remove_kube_router_ipsets() -> None:
    """The ipsets of kube-router's NetworkPolicy controller (after the chains that match them are gone)."""
    if shutil.which("ipset") is None:
        return
    names = _run(["ipset", "list", "-n"], "ipset list", check=False).stdout.split()
    for name in names:
        if name.startswith(KUBE_ROUTER_IPSET_PREFIXES):
            _run(["ipset", "destroy", name], f"ipset destroy {name}", check=False)


def teardown_host() -> None:
    """The host interface and the unreachable routes."""
    if _run(["ip", "link", "show", network.HOST_INTERFACE], "ip link show", check=False).returncode == 0:
        _run(["ip", "link", "delete", network.HOST_INTERFACE], "deleting the host interface", check=False)
    for cidr in network.UNREACHABLE_CIDRS:
        _run(["ip", "route", "delete", "unreachable", cidr], f"removing the route of {cidr}", check=False)


def host_memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RealNodeError("no MemTotal in /proc/meminfo")


def write_yaml(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return path


ProgressFn = Callable[[str], None]


# -- bring-up and tear-down ---------------------------------------------------------------------------

Launch = Callable[[str, list[str]], None]
Wait = Callable[[str, Callable[[], bool], float], None]


@dataclasses.dataclass
class RealNodeRuntime:
    """What :func:`start_real_nodes` needs from the cluster that hosts the nodes."""

    directory: Path
    pki: Path
    server: str
    kubelet: Path
    kube_proxy: Path
    coredns: Path
    #: The NetworkPolicy enforcer; None runs without one (policies are then ignored, as by the bridge).
    kube_router: Path | None
    ports: dict[str, int]
    launch: Launch
    wait: Wait
    node_ready: Callable[[str], bool]
    progress: ProgressFn


def container_cgroup_files(node_name: str, container_id: str, controller: str, name: str) -> list[Path]:
    """The files ``name`` of a container's cgroups on real node ``node_name`` (cgroup v1 ``controller``)."""
    root = Path("/sys/fs/cgroup") / controller / f"edgeaigc-{node_name}"
    return list(root.rglob(f"{container_id}/{name}"))


#: Longest path of a unix socket (sun_path, less containerd's ".ttrpc" suffix and a margin).
MAX_SOCKET_PATH = 100


def plan_real_nodes(directory: Path, count: int, cloud: bool = False) -> list[RealNode]:
    """The real nodes of a cluster in ``directory``: ``count`` Pis, and with ``cloud`` a real cloud node
    after them (:data:`CLOUD_NODE_NAME`).

    Raises:
        RealNodeError: the directory's path is too long for containerd's sockets inside it.
    """
    nodes = [RealNode(name, index, directory / "nodes" / name) for index, name in enumerate(real_node_names(count))]
    if cloud:
        nodes.append(
            RealNode(
                CLOUD_NODE_NAME,
                count,
                directory / "nodes" / CLOUD_NODE_NAME,
                CLOUD_ALLOCATABLE_CPU_MILLICORES,
                CLOUD_ALLOCATABLE_MEMORY_MIB,
                tier="cloud",
            )
        )
    longest = max((len(f"{node.containerd_socket}.ttrpc") for node in nodes), default=0)
    if longest > MAX_SOCKET_PATH:
        raise RealNodeError(
            f"the cluster directory {directory} is too long for containerd's sockets inside it ({longest} > "
            f"{MAX_SOCKET_PATH} characters): use a shorter EDGEAIGC_CLUSTER_DIR"
        )
    return nodes


def _socket_ready(path: Path) -> bool:
    return path.is_socket()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def import_images(node: RealNode, archives: Sequence[Path]) -> None:
    """Import OCI archives into the node's containerd (namespace k8s.io, where the CRI looks)."""
    for archive in archives:
        _run(
            ["ctr", "--address", str(node.containerd_socket), "-n", "k8s.io", "images", "import", str(archive)],
            f"importing {archive.name} into {node.name}",
            timeout=600,
        )


def start_real_nodes(
    nodes: Sequence[RealNode], runtime: RealNodeRuntime, archives: Sequence[Path], timeout_s: float
) -> None:
    """Start containerd and a kubelet per node, then kube-proxy and CoreDNS; wait for every node Ready."""
    missing = missing_packages()
    if missing:
        raise RealNodeError(f"real nodes need Debian packages: apt-get install -y {' '.join(missing)} (or `make deps`)")
    setup_host(nodes)
    ca_file = runtime.pki / "ca.crt"
    cpus = os.cpu_count() or 1
    memory = host_memory_mib()
    for node in nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        (node.directory / "containerd.toml").write_text(containerd_config(node))
        write_json(node.directory / "cni" / "10-edgeaigc.conflist", cni_config(node))
        runtime.progress(f"starting containerd of real node {node.name}")
        runtime.launch(f"containerd_{node.name}", ["containerd", "--config", str(node.directory / "containerd.toml")])
        runtime.wait(f"containerd_{node.name}", functools.partial(_socket_ready, node.containerd_socket), timeout_s)
        runtime.progress(f"importing {len(archives)} images into {node.name}")
        import_images(node, archives)
        create_cgroup_root(node)
        cert, key = write_node_credentials(runtime.pki, node.name)
        kubeconfig = write_yaml(
            node.directory / "kubeconfig",
            kubeconfig_document(runtime.server, ca_file, cert, key, f"system:node:{node.name}"),
        )
        ports = {
            "kubelet": runtime.ports[f"kubelet_{node.name}"],
            "kubelet_healthz": runtime.ports[f"kubelet_healthz_{node.name}"],
        }
        config = write_yaml(node.directory / "kubelet.yaml", kubelet_config(node, ca_file, ports, memory, cpus))
        labels = ",".join(f"{key}={value}" for key, value in node.labels.items())
        runtime.progress(f"starting the kubelet of real node {node.name} ({node.address}, pods {node.pod_subnet})")
        runtime.launch(
            f"kubelet_{node.name}",
            [
                str(runtime.kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={node.name}",
                f"--node-ip={node.address}",
                f"--node-labels={labels}",
                f"--root-dir={node.kubelet_root}",
                "--v=1",
            ],
        )
    admin_kubeconfig = runtime.directory / "kubeconfig"
    proxy_config = write_yaml(
        runtime.directory / "kube-proxy.yaml",
        kube_proxy_config(nodes[0].name, admin_kubeconfig, runtime.ports),
    )
    runtime.progress("starting kube-proxy (Services) and CoreDNS (cluster names) for the real nodes")
    runtime.launch("kube_proxy", [str(runtime.kube_proxy), f"--config={proxy_config}"])
    (runtime.directory / "Corefile").write_text(corefile(admin_kubeconfig))
    runtime.launch("coredns", [str(runtime.coredns), "-conf", str(runtime.directory / "Corefile")])
    for node in nodes:
        runtime.wait(f"kubelet_{node.name}", functools.partial(runtime.node_ready, node.name), timeout_s)
    if runtime.kube_router is not None:
        # After the nodes registered: kube-router finds its node (and so the pods to guard) by name.
        if len(nodes) > 1:
            runtime.progress(
                f"NetworkPolicies are enforced for the pods of {nodes[0].name} only (one kube-router per host)"
            )
        runtime.progress("starting kube-router's NetworkPolicy controller (the CNI bridge ignores NetworkPolicies)")
        runtime.launch(
            "kube_router",
            [str(runtime.kube_router), *kube_router_arguments(nodes[0].name, admin_kubeconfig, runtime.ports)],
        )
        health = f"http://127.0.0.1:{runtime.ports['kube_router_health']}/healthz"
        runtime.wait("kube_router", functools.partial(_http_ok, health), timeout_s)
    runtime.progress(f"{len(nodes)} real node(s) Ready: {', '.join(node.name for node in nodes)}")


def nodes_in(directory: Path) -> list[RealNode]:
    """The real nodes a cluster in ``directory`` started, with the indices :func:`plan_real_nodes` gave them
    (the Pis by number, then the cloud node): the index decides the pod subnet and the bridge to clean up.
    Taking it from the name's number gave ``cloud-real-0`` the first Pi's and left its pods' network
    namespaces behind."""
    nodes_dir = directory / "nodes"
    names = {path.name for path in nodes_dir.iterdir()} if nodes_dir.exists() else set()
    pis = sorted((name for name in names if name.startswith("pi-real-")), key=lambda n: int(n.rsplit("-", 1)[1]))
    nodes = [RealNode(name, int(name.rsplit("-", 1)[1]), nodes_dir / name) for name in pis]
    if CLOUD_NODE_NAME in names:
        nodes.append(RealNode(CLOUD_NODE_NAME, len(pis), nodes_dir / CLOUD_NODE_NAME, tier="cloud"))
    return nodes


def stop_real_nodes(directory: Path, kube_proxy: Path | None, progress: ProgressFn) -> None:
    """Everything a real node left: containers, shims, mounts, network namespaces, bridges, cgroups.

    Called after the cluster's processes (kubelets, containerd, kube-proxy, CoreDNS) were stopped;
    safe to call again and on a half-started cluster.
    """
    nodes = nodes_in(directory)
    for node in nodes:
        kill_containers(node)
        # The shims outlive containerd (they are their own sessions); each names its containerd's socket.
        kill_processes(f"-address {node.containerd_socket}")
        unmount_all(node.directory)
        remove_network(node)
        remove_cgroup_root(node)
    if nodes:
        if kube_proxy is not None and kube_proxy.exists():
            _run([str(kube_proxy), "--cleanup"], "kube-proxy --cleanup", check=False)
        remove_kube_chains()
        remove_kube_router_ipsets()
        teardown_host()
        progress(f"removed {len(nodes)} real node(s): containers, mounts, network namespaces, bridges, cgroups")
