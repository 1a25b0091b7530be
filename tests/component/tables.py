"""Routing tables for the gateway tests, and a directory that updates like a mounted ConfigMap."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgeaigc.inference.gateway.routing_table import EdgeNodeRoutes, Endpoint, LocalModel, RoutingTable

EDGE_NODE = "pi-0"


def routing_table(
    generation: int,
    local: Mapping[str, Sequence[str | tuple[str, float]]],
    cloud: Mapping[str, str],
    edge_node: str = EDGE_NODE,
    cameras: Sequence[str] = (),
) -> RoutingTable:
    """``local``: model -> endpoint URLs (or (URL, weight)) on ``edge_node``; ``cloud``: model -> URL."""
    models = {
        model: LocalModel(
            tuple(Endpoint(e, 1.0) if isinstance(e, str) else Endpoint(e[0], e[1]) for e in endpoints), 0.5
        )
        for model, endpoints in local.items()
    }
    routes = EdgeNodeRoutes(models, {camera: 0.1 for camera in cameras})
    return RoutingTable(generation, {edge_node: routes}, dict(cloud))


class ConfigMapMount:
    """A directory laid out like a mounted ConfigMap: ``routing.json -> ..data/routing.json``.

    Every :meth:`write` puts the content in a new timestamped directory and swaps the ``..data``
    symlink atomically (rename), as the kubelet's atomic writer does.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._versions = itertools.count()
        self.path = directory / "routing.json"

    def write(self, text: str) -> None:
        version = self.directory / f"..2026_{next(self._versions):04d}"
        version.mkdir()
        (version / "routing.json").write_text(text)
        temporary = self.directory / "..data_tmp"
        temporary.symlink_to(version.name)
        os.replace(temporary, self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(Path("..data") / "routing.json")

    def write_table(self, table: RoutingTable) -> None:
        self.write(table.to_json())
