"""The routing table: what the operator writes and every edge gateway reads.

Stored as JSON under the key ``routing.json`` of a ConfigMap (one per PlacementPolicy); the
format is documented in ``docs/routing-table.md``. For each edge node: the models cached there
with their local endpoints (weights for balancing) and compute shares, and each camera's
bandwidth share; for every model: the cloud endpoint used on a miss. ``generation`` grows with
every change so gateways can tell a new table from a re-read of the old one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

API_VERSION = "edgeaigc.io/v1alpha1"
KIND = "RoutingTable"


class InvalidRoutingTable(ValueError):
    """The document is not a valid routing table; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    url: str
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class LocalModel:
    endpoints: tuple[Endpoint, ...]
    compute_share: float


@dataclasses.dataclass(frozen=True)
class EdgeNodeRoutes:
    models: dict[str, LocalModel]
    camera_bandwidth_share: dict[str, float]
    node_name: str | None = None
    """The Kubernetes node the EdgeNode runs on (lets a gateway find its entry from its node's name)."""
    uplink_bytes_per_second: float | None = None
    """The node's uplink capacity the plan's bandwidth shares divide (None: shares are not enforced)."""


@dataclasses.dataclass(frozen=True)
class RoutingTable:
    generation: int
    edge_nodes: dict[str, EdgeNodeRoutes]
    cloud: dict[str, str]
    """Model name -> cloud inference URL (used on a miss)."""

    def route(self, edge_node: str, model: str) -> tuple[tuple[Endpoint, ...], str | None]:
        """Local endpoints of ``model`` on ``edge_node`` (empty on a miss) and its cloud URL."""
        node = self.edge_nodes.get(edge_node)
        local = node.models.get(model) if node else None
        return (local.endpoints if local else ()), self.cloud.get(model)

    def edge_node_on(self, node_name: str) -> str | None:
        """The EdgeNode whose ``nodeName`` is ``node_name`` (or whose own name is), if any."""
        for name, routes in sorted(self.edge_nodes.items()):
            if routes.node_name == node_name:
                return name
        return node_name if node_name in self.edge_nodes else None

    def to_json(self) -> str:
        document = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "generation": self.generation,
            "edgeNodes": {
                name: {
                    **({"nodeName": routes.node_name} if routes.node_name else {}),
                    **(
                        {"uplinkBytesPerSecond": routes.uplink_bytes_per_second}
                        if routes.uplink_bytes_per_second is not None
                        else {}
                    ),
                    "models": {
                        model: {
                            "endpoints": [{"url": e.url, "weight": e.weight} for e in local.endpoints],
                            "computeShare": local.compute_share,
                        }
                        for model, local in sorted(routes.models.items())
                    },
                    "cameras": {
                        camera: {"bandwidthShare": share}
                        for camera, share in sorted(routes.camera_bandwidth_share.items())
                    },
                }
                for name, routes in sorted(self.edge_nodes.items())
            },
            "cloud": {model: {"url": url} for model, url in sorted(self.cloud.items())},
        }
        # Compact: the table is one ConfigMap, at most 1 MiB; indented it reached that at 1000 nodes with
        # ~1800 replicas (1.17 MB; 0.66 MB compact).
        return json.dumps(document, separators=(",", ":"), sort_keys=False)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRoutingTable(f"{where} must be a number in [{low}, {high}], got {str(value)[:40]}")
    return float(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRoutingTable(f"{where} must be an object")
    return value


def parse_routing_table(text: str) -> RoutingTable:
    """Parse and validate ``routing.json``; raise :class:`InvalidRoutingTable` naming the field."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep; ValueError: 5,000 digits
        raise InvalidRoutingTable(f"not JSON: {error or type(error).__name__}") from None
    document = _mapping(document, "routing table")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise InvalidRoutingTable(f"apiVersion/kind must be {API_VERSION}/{KIND}")
    generation = document.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or not 0 <= generation < 2**63:
        raise InvalidRoutingTable("generation must be a non-negative 64-bit integer")
    edge_nodes: dict[str, EdgeNodeRoutes] = {}
    for node, routes in _mapping(document.get("edgeNodes", {}), "edgeNodes").items():
        where = f"edgeNodes.{node}"
        models: dict[str, LocalModel] = {}
        for model, local in _mapping(_mapping(routes, where).get("models", {}), f"{where}.models").items():
            local = _mapping(local, f"{where}.models.{model}")
            raw_endpoints = local.get("endpoints")
            if not isinstance(raw_endpoints, list) or not raw_endpoints:
                raise InvalidRoutingTable(f"{where}.models.{model}.endpoints must be a non-empty list")
            endpoints = []
            for i, endpoint in enumerate(raw_endpoints):
                endpoint = _mapping(endpoint, f"{where}.models.{model}.endpoints[{i}]")
                url = endpoint.get("url")
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise InvalidRoutingTable(f"{where}.models.{model}.endpoints[{i}].url must be an http(s) URL")
                endpoints.append(
                    Endpoint(
                        url,
                        _number(endpoint.get("weight", 1.0), f"{where}.models.{model}.endpoints[{i}].weight", 0, 1e6),
                    )
                )
            models[model] = LocalModel(
                tuple(endpoints), _number(local.get("computeShare", 0.0), f"{where}.models.{model}.computeShare", 0, 1)
            )
        cameras = {
            camera: _number(
                _mapping(entry, f"{where}.cameras.{camera}").get("bandwidthShare"),
                f"{where}.cameras.{camera}.bandwidthShare",
                0,
                1,
            )
            for camera, entry in _mapping(_mapping(routes, where).get("cameras", {}), f"{where}.cameras").items()
        }
        node_name = _mapping(routes, where).get("nodeName")
        if node_name is not None and (not isinstance(node_name, str) or not node_name):
            raise InvalidRoutingTable(f"{where}.nodeName must be a non-empty string")
        uplink = _mapping(routes, where).get("uplinkBytesPerSecond")
        if uplink is not None:
            uplink = _number(uplink, f"{where}.uplinkBytesPerSecond", 1, 1e15)
        edge_nodes[node] = EdgeNodeRoutes(models, cameras, node_name, uplink)
    cloud = {}
    for model, entry in _mapping(document.get("cloud", {}), "cloud").items():
        url = _mapping(entry, f"cloud.{model}").get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidRoutingTable(f"cloud.{model}.url must be an http(s) URL")
        cloud[model] = url
    return RoutingTable(generation, edge_nodes, cloud)
