"""The fleet as the simulator knows it, built from the custom resources.

The operator decides with exactly the system model the policies were trained and benchmarked
on: :func:`scenario_from_resources` turns a PlacementPolicy and the namespace's EdgeNodes,
InferenceModels and Cameras into a :class:`~edgeaigc.policy.scenario.Scenario` (through the
same validation as a scenario file), so encoder, plan projection and actors are reused as is.
The traffic twin builds the fleet it plays with the same function.

The placement a cluster runs is read from the operator's edge Deployments the same way for
everyone: :func:`placed_models` says which (EdgeNode, model) each one places, :func:`current_cache`
turns that into the simulator's ``x[e, m]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from edgeaigc.policy import resources
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.quantities import mebibytes
from edgeaigc.policy.scenario import Scenario, ScenarioError, scenario_from_dict

Resource = Mapping[str, Any]


class InvalidFleet(ValueError):
    """The resources do not describe a usable fleet; the message names the object and field."""


def _megabytes(quantity: Any, where: str) -> float:
    """A quantity in MiB, the unit of the scenario files' ``*_mb`` fields (``24Mi`` -> 24)."""
    try:
        return mebibytes(quantity)
    except ValueError as error:
        raise InvalidFleet(f"{where}: {quantity!r} is not a Kubernetes quantity") from error


def _name(resource: Resource) -> str:
    return str(resource["metadata"]["name"])


def scenario_from_resources(
    policy: Resource,
    edge_nodes: Sequence[Resource],
    models: Sequence[Resource],
    cameras: Sequence[Resource],
) -> Scenario:
    """A :class:`Scenario` for ``policy`` over the given resources (sorted by name).

    Cameras whose ``spec.edgeNode`` names no EdgeNode are left out (reported by the caller);
    an empty fleet is an :class:`InvalidFleet`.
    """
    nodes = sorted(edge_nodes, key=_name)
    node_names = [_name(n) for n in nodes]
    attached = sorted((c for c in cameras if c["spec"].get("edgeNode") in node_names), key=_name)
    if not nodes or not models or not attached:
        raise InvalidFleet(
            f"need at least one EdgeNode, InferenceModel and Camera attached to an EdgeNode "
            f"(have {len(nodes)}, {len(models)}, {len(attached)})"
        )
    spec = with_defaults("PlacementPolicy", policy.get("spec"))
    reward, cloud = spec["reward"], spec["cloud"]
    node_specs = [(_name(n), with_defaults("EdgeNode", n["spec"])) for n in nodes]
    model_specs = [(_name(m), with_defaults("InferenceModel", m["spec"])) for m in sorted(models, key=_name)]
    document: dict[str, Any] = {
        "name": _name(policy),
        # The slot the policy plans for, not how often it decides: an actor trained on 60 s slots
        # weighs a download against 60 s of benefit whatever the decision interval.
        "slot_seconds": spec["planningSlotSeconds"],
        "episode_slots": 1,
        "slo_s": spec["sloSeconds"],
        "request_overhead_ms": spec["requestOverheadMs"],
        "reward": {
            "alpha": reward["alpha"],
            "beta": reward["beta"],
            "t_ref_s": reward["tRefSeconds"],
            "c_ref_per_request": reward["cRefPerRequest"],
        },
        "cloud": {
            "core_speed": cloud["coreSpeed"],
            "price_per_core_second": cloud["pricePerCoreSecond"],
            "price_per_gb_transfer": cloud["pricePerGBTransfer"],
            "download_price_per_gb": cloud["downloadPricePerGB"],
        },
        "edge_nodes": [
            {
                "name": name,
                "storage_mb": _megabytes(node["modelStorage"], f"EdgeNode {name} spec.modelStorage"),
                "cores": node["cores"],
                "core_speed": node["coreSpeed"],
                "bandwidth_mhz": node["bandwidthMHz"],
                "backhaul_mbps": node["backhaulMbps"],
                "rtt_ms": node["rttMs"],
                "energy_price_per_core_second": node["energyPricePerCoreSecond"],
                # spec.site: nodes of one site share a LAN (peer-to-peer model distribution); absent,
                # a site of its own. The LAN's rate is the scenario files' default (site_lan_mbps).
                **({"site": node["site"]} if node.get("site") else {}),
            }
            for name, node in node_specs
        ],
        "models": [
            {
                "name": name,
                "stage": model["stage"],
                "daypart": model["daypart"],
                "size_mb": _megabytes(model["size"], f"InferenceModel {name} spec.size"),
                "work_ms": model["workMs"],
                "input_kb": model["inputKB"],
                "output_kb": model["outputKB"],
            }
            for name, model in model_specs
        ],
        # Camera attachments and frame rates come from the Camera objects (set below).
        "cameras": {"count": len(attached), "fps": 1.0},
    }
    try:
        scenario = scenario_from_dict(document)
    except ScenarioError as error:
        raise InvalidFleet(str(error)) from error
    return scenario.with_overrides(
        camera_names=tuple(_name(c) for c in attached),
        camera_node=np.array([node_names.index(c["spec"]["edgeNode"]) for c in attached], dtype=np.int64),
        camera_fps=np.array([float(c["spec"]["fps"]) for c in attached]),
    )


def unattached_cameras(edge_nodes: Sequence[Resource], cameras: Sequence[Resource]) -> list[str]:
    """Cameras whose EdgeNode does not exist (they are left out of decisions)."""
    names = {_name(n) for n in edge_nodes}
    return sorted(_name(c) for c in cameras if c["spec"].get("edgeNode") not in names)


class PlacedModel(NamedTuple):
    """A model the operator placed on an EdgeNode: one of its edge Deployments."""

    edge_node: str
    model: str
    deployment: Resource


def placed_models(deployments: Iterable[Resource], policy: str | None = None) -> list[PlacedModel]:
    """The (EdgeNode, model) pairs that the operator's edge Deployments place, whatever their readiness.

    Args:
        deployments: Deployments as listed (others than edge inference ones are skipped).
        policy: only those of this PlacementPolicy (None: whichever policy's).
    """
    placed = []
    for deployment in deployments:
        labels = deployment.get("metadata", {}).get("labels") or {}
        if labels.get(resources.LABEL_COMPONENT) != resources.COMPONENT_EDGE_INFERENCE:
            continue
        if policy is not None and labels.get(resources.LABEL_POLICY) != policy:
            continue
        edge_node, model = labels.get(resources.LABEL_EDGE_NODE, ""), labels.get(resources.LABEL_MODEL, "")
        if edge_node and model:
            placed.append(PlacedModel(str(edge_node), str(model), deployment))
    return placed


def current_cache(scenario: Scenario, deployments: Iterable[Resource]) -> np.ndarray:
    """x[e, m] of the placed models (:func:`placed_models`) on the scenario's nodes and models."""
    nodes = {name: e for e, name in enumerate(scenario.node_names)}
    models = {name: m for m, name in enumerate(scenario.model_names)}
    cache = np.zeros((scenario.num_nodes, scenario.num_models))
    for placed in placed_models(deployments):
        e, m = nodes.get(placed.edge_node), models.get(placed.model)
        if e is not None and m is not None:
            cache[e, m] = 1.0
    return cache
