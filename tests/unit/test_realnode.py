"""Real nodes' configuration, rendered without starting anything: addresses, kubelet, containerd, CNI."""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest

from edgeaigc.cluster import network, realnode

BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")


def node(index: int = 0) -> realnode.RealNode:
    return realnode.RealNode(f"pi-real-{index}", index, Path(f"/state/nodes/pi-real-{index}"))


def test_every_range_is_in_the_benchmarking_range_and_they_do_not_overlap() -> None:
    ranges = [ipaddress.ip_network(r) for r in (network.POD_CIDR, network.HOST_CIDR, network.SERVICE_CIDR)]
    assert all(r.subnet_of(BENCHMARKING) for r in ranges)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(ranges, 2))
    assert ipaddress.ip_address(network.KUBERNETES_SERVICE_IP) in ipaddress.ip_network(network.SERVICE_CIDR)
    assert ipaddress.ip_address(network.HOST_ADDRESS) in ipaddress.ip_network(network.HOST_CIDR)


def test_nodes_get_disjoint_pod_ranges_and_their_own_addresses() -> None:
    count = network.MAX_REAL_NODES
    subnets = [ipaddress.ip_network(network.pod_subnet(i)) for i in range(count)]
    assert all(s.subnet_of(ipaddress.ip_network(network.POD_CIDR)) for s in subnets)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(subnets, 2))
    addresses = {network.node_address(i) for i in range(count)} | {network.HOST_ADDRESS}
    assert len(addresses) == count + 1
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(network.HOST_CIDR) for a in addresses)
    assert all(len(network.bridge_name(i)) <= 15 for i in range(count))  # IFNAMSIZ - 1
    with pytest.raises(ValueError, match="outside"):
        network.pod_subnet(count)


def test_real_node_names_are_bounded() -> None:
    assert realnode.real_node_names(2) == ["pi-real-0", "pi-real-1"]
    for bad in (0, network.MAX_REAL_NODES + 1):
        with pytest.raises(ValueError, match="--real-nodes"):
            realnode.real_node_names(bad)


def test_kubelet_reserves_the_machine_down_to_a_pi() -> None:
    config = realnode.kubelet_config(
        node(1), Path("/pki/ca.crt"), {"kubelet": 10250, "kubelet_healthz": 10248}, host_memory_mib=24_000, host_cpus=2
    )
    # Allocatable = capacity - kubeReserved - eviction threshold: 1 CPU and 2 GiB, a Pi's figures.
    assert config["kubeReserved"] == {"cpu": "1000m", "memory": f"{24_000 - 2048 - 100}Mi"}
    assert config["evictionHard"]["memory.available"] == "100Mi"
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/edgeaigc-pi-real-1"
    assert config["address"] == network.node_address(1)
    assert config["clusterDNS"] == [network.HOST_ADDRESS]
    assert config["containerRuntimeEndpoint"] == "unix:///state/nodes/pi-real-1/containerd/containerd.sock"
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_containerd_runs_runc_with_cgroupfs_and_the_local_pause_image() -> None:
    config = tomllib.loads(realnode.containerd_config(node()))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == realnode.PAUSE_IMAGE
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == "/state/nodes/pi-real-0/cni"
    assert config["grpc"]["address"] == "/state/nodes/pi-real-0/containerd/containerd.sock"
    assert config["root"].startswith("/state/nodes/pi-real-0/")


def test_pod_network_never_routes_off_the_machine() -> None:
    config = realnode.cni_config(node(3))
    bridge = config["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": network.pod_subnet(3)}]]
    destinations = [route["dst"] for route in bridge["ipam"]["routes"]]
    assert "0.0.0.0/0" not in destinations
    assert all(ipaddress.ip_network(d).subnet_of(BENCHMARKING) for d in destinations)


def test_kube_proxy_opens_node_ports_only_on_the_host_addresses() -> None:
    ports = {"kube_proxy_healthz": 1, "kube_proxy_metrics": 2}
    config = realnode.kube_proxy_config("pi-real-0", Path("/kubeconfig"), ports)
    assert config["nodePortAddresses"] == [network.HOST_CIDR]
    assert config["clusterCIDR"] == network.POD_CIDR
    assert config["conntrack"] == {"maxPerCore": 0, "min": 0}


def test_kube_router_only_enforces_network_policies() -> None:
    arguments = realnode.kube_router_arguments("pi-real-0", Path("/kubeconfig"), {"kube_router_health": 7})
    flags = dict(argument.removeprefix("--").split("=", 1) for argument in arguments)
    # Its defaults would also run a BGP router and a service proxy (kube-proxy has that job here).
    assert flags["run-firewall"] == "true" and flags["run-router"] == "false" and flags["run-service-proxy"] == "false"
    assert flags["service-cluster-ip-range"] == network.SERVICE_CIDR
    assert flags["hostname-override"] == "pi-real-0" and flags["kubeconfig"] == "/kubeconfig"
    assert flags["health-port"] == "7" and flags["metrics-port"] == "0"
    assert "ipset" in realnode.REQUIRED_BINARIES


def test_coredns_listens_on_the_host_address_and_forwards_nothing() -> None:
    text = realnode.corefile(Path("/kubeconfig"))
    assert f"bind {network.HOST_ADDRESS}" in text
    assert f"kubernetes {network.CLUSTER_DOMAIN}" in text
    assert "forward" not in text


def _pod(name: str, node: str, ip: str, phase: str = "Running", **annotations: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "edge",
            "annotations": {f"prometheus.io/{k}": v for k, v in annotations.items()},
        },
        "spec": {"nodeName": node},
        "status": {"phase": phase, "podIP": ip},
    }


def test_prometheus_targets_are_the_annotated_running_pods_of_real_nodes(tmp_path: Path) -> None:
    from edgeaigc.cluster import pod_targets

    pods = [
        _pod("gateway", "pi-real-0", "198.18.1.5", scrape="true", port="8000", path="/metrics"),
        _pod("operator", "pi-real-0", "198.18.1.6", scrape="true", port="8000"),
        _pod("quiet", "pi-real-0", "198.18.1.7", port="8000"),  # not annotated to be scraped
        _pod("fake", "pi-0", "198.18.192.9", scrape="true", port="8000"),  # a kwok pod
        _pod("elsewhere", "pi-real-0", "10.1.2.3", scrape="true", port="8000"),  # outside our range
        _pod("pending", "pi-real-0", "198.18.1.8", phase="Pending", scrape="true", port="8000"),
        _pod("no-port", "pi-real-0", "198.18.1.9", scrape="true"),
    ]
    groups = pod_targets.pod_target_groups(pods, ["pi-real-0"])
    assert [group["targets"] for group in groups] == [["198.18.1.5:8000"], ["198.18.1.6:8000"]]
    labels = {"job": "kubernetes-pods", "namespace": "edge", "pod": "gateway", "node": "pi-real-0"}
    assert groups[0]["labels"] == {**labels, "__metrics_path__": "/metrics"}
    assert pod_targets.write_targets(tmp_path, groups) is True
    assert pod_targets.write_targets(tmp_path, groups) is False  # unchanged: not rewritten


def test_a_cluster_directory_too_long_for_containerds_sockets_is_refused(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 80)
    with pytest.raises(realnode.RealNodeError, match="too long for containerd's sockets"):
        realnode.plan_real_nodes(long, 1)
    assert realnode.plan_real_nodes(Path("/tmp/c"), 2)[1].containerd_socket == Path(
        "/tmp/c/nodes/pi-real-1/containerd/containerd.sock"
    )


def test_a_real_cloud_node_comes_after_the_pis_with_the_cloud_tier_and_room_for_the_replicas() -> None:
    nodes = realnode.plan_real_nodes(Path("/tmp/c"), 1, cloud=True)
    assert [(n.name, n.tier) for n in nodes] == [("pi-real-0", "edge"), ("cloud-real-0", "cloud")]
    edge, cloud = nodes
    assert edge.labels["edgeaigc.io/tier"] == "edge" and cloud.labels["edgeaigc.io/tier"] == "cloud"
    assert "node.kubernetes.io/instance-type" not in cloud.labels  # not a Pi
    assert cloud.address != edge.address and cloud.pod_subnet != edge.pod_subnet
    assert cloud.allocatable_cpu_millicores > edge.allocatable_cpu_millicores


def test_the_nodes_of_a_cluster_directory_keep_their_planned_indices() -> None:
    """Tear-down finds each node's pod subnet and bridge by its index: the cloud node's is after the Pis'."""
    tmp_path = Path(tempfile.mkdtemp(prefix="rn-"))  # short: containerd's socket paths must fit
    planned = realnode.plan_real_nodes(tmp_path, 2, cloud=True)
    for node in planned:
        node.directory.mkdir(parents=True)
    found = realnode.nodes_in(tmp_path)
    assert [(n.name, n.index, n.pod_subnet, n.bridge) for n in found] == [
        (n.name, n.index, n.pod_subnet, n.bridge) for n in planned
    ]
    assert realnode.nodes_in(tmp_path / "none") == []
    shutil.rmtree(tmp_path)
