"""Address plan of the local cluster: ranges that cannot be mistaken for anything outside.

Everything lives in 198.18.0.0/15, the range reserved for benchmarking network devices
(RFC 2544): no real host has such an address, so nothing the local cluster does can reach
another machine. Pod traffic never leaves this machine (no masquerade to an outside interface,
no default route but the host's bridges).

- ``198.18.0.0/17``: pods; real node ``i`` gets ``198.18.(i+1).0/24`` on its own bridge.
- ``198.18.128.0/24``: the host's own addresses on an interface of their own (a bridge without
  ports): the address the API server advertises and CoreDNS listens on (``.1``), and one address
  per real node (``.10 + i``), which is its InternalIP (a kubelet refuses a loopback node IP).
- ``198.18.192.0/18``: the addresses kwok gives its fake pods (and ``198.18.129.1`` its fake nodes).
  Nothing answers there: with real nodes the host routes the range as *unreachable*, so a Service
  whose endpoints are fake pods (kube-proxy DNATs to them) fails at once instead of leaving.
- ``198.19.0.0/16``: Service ClusterIPs; ``198.19.0.1`` is the ``kubernetes`` Service.
"""

from __future__ import annotations

import ipaddress

POD_CIDR = "198.18.0.0/17"
HOST_CIDR = "198.18.128.0/24"
SERVICE_CIDR = "198.19.0.0/16"
KWOK_POD_CIDR = "198.18.192.0/18"
KWOK_NODE_IP = "198.18.129.1"
#: Ranges with nothing behind them, routed as unreachable on the host when real nodes run.
UNREACHABLE_CIDRS = (KWOK_POD_CIDR, "198.18.129.0/24")
#: The first address of the Service range: the ``kubernetes`` Service (in the API server's certificate).
KUBERNETES_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
#: Where pods reach the API server (through the ``kubernetes`` Service) and CoreDNS.
HOST_ADDRESS = "198.18.128.1"
#: The interface (a bridge without ports) that carries the host's addresses of :data:`HOST_CIDR`.
HOST_INTERFACE = "edgeaigc0"
CLUSTER_DOMAIN = "cluster.local"
#: Prometheus of a cluster with real nodes listens on ``HOST_ADDRESS:PROMETHEUS_PORT`` (pods reach it there).
PROMETHEUS_PORT = 9090
#: Real nodes per cluster (a /24 of pods each, an address each in :data:`HOST_CIDR`).
MAX_REAL_NODES = 100


def pod_subnet(index: int) -> str:
    """The pod range of real node ``index`` (0-based)."""
    _check_index(index)
    return f"198.18.{index + 1}.0/24"


def node_address(index: int) -> str:
    """The InternalIP of real node ``index`` (0-based), on :data:`HOST_INTERFACE`."""
    _check_index(index)
    return f"198.18.128.{10 + index}"


def bridge_name(index: int) -> str:
    """The Linux bridge of real node ``index``'s pods (at most 15 characters)."""
    _check_index(index)
    return f"edgeaigc-br{index}"


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_REAL_NODES:
        raise ValueError(f"real node index {index} is outside 0..{MAX_REAL_NODES - 1}")
