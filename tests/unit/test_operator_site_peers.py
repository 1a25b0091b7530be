"""The operator's side of peer-to-peer model distribution: EdgeNode spec.site into the fleet, the
peers ConfigMap of newly placed replicas, and edge templates that do not move with their neighbours."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgeaigc.operator import builders
from edgeaigc.operator import constants as c
from edgeaigc.operator.reconcile import manifest_hash
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.resources import object_name
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import Plan
from tests.unit.test_operator_builders import POLICY, _kind

SHA = "a" * 64
# pi-0, pi-1 and pi-2 in site "north"; pi-3 and pi-4 keep no site (sites of their own).
SITES = {"pi-0": "north", "pi-1": "north", "pi-2": "north"}


def _fleet(sites: dict[str, str] = SITES) -> Scenario:
    nodes = copy.deepcopy(_kind("EdgeNode"))
    for node in nodes:
        if node["metadata"]["name"] in sites:
            node["spec"]["site"] = sites[node["metadata"]["name"]]
    return scenario_from_resources(POLICY, nodes, _kind("InferenceModel"), _kind("Camera"))


def _cache(fleet: Scenario, placed: dict[str, list[str]]) -> np.ndarray:
    cache = np.zeros((fleet.num_nodes, fleet.num_models))
    for node, models in placed.items():
        for model in models:
            cache[fleet.node_names.index(node), fleet.model_names.index(model)] = 1
    return cache


def _objects(fleet: Scenario, cache: np.ndarray, previous: np.ndarray, **artifacts: Any) -> list[dict[str, Any]]:
    plan = Plan(cache, cache * 0.5, np.full(fleet.num_cameras, 1 / 8))
    nodes = {n: f"node-{n}" for n in fleet.node_names}
    table = builders.build_routing_table(POLICY, fleet, plan, 1, nodes)
    artifact = {"url": "https://models.example/det.onnx", "sha256": SHA}
    return builders.desired_objects(
        POLICY,
        fleet,
        plan,
        nodes,
        table,
        artifacts=artifacts or {"det-yolox-nano-day": artifact},
        previous_cache=previous,
    )


def _named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


DET = "det-yolox-nano-day"
PEERS_CONFIGMAP = object_name("traffic-city", "peers")


def test_edge_node_site_becomes_the_fleets_site() -> None:
    fleet = _fleet()
    north = {fleet.node_site[fleet.node_names.index(n)] for n in SITES}
    assert len(north) == 1
    assert len(set(fleet.node_site.tolist())) == 3  # north, pi-3, pi-4
    assert builders.shared_site_nodes(fleet).tolist() == [True, True, True, False, False]


def test_a_new_replica_gets_the_site_neighbours_that_keep_the_model() -> None:
    fleet = _fleet()
    previous = _cache(fleet, {"pi-0": [DET], "pi-2": [DET], "pi-3": [DET]})
    # det stays on pi-0, leaves pi-2, and is new on pi-1 and pi-4 (pi-4 has no site).
    now = _cache(fleet, {"pi-0": [DET], "pi-1": [DET], "pi-3": [DET], "pi-4": [DET]})
    assert builders.site_peers(fleet, now, previous) == {("pi-1", DET): ["pi-0"]}
    peers = _named(_objects(fleet, now, previous), "ConfigMap", PEERS_CONFIGMAP)
    assert peers["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_PEERS
    neighbour = f"http://{object_name(DET, 'pi-0')}.traffic-city.svc:{c.INFERENCE_PORT}"
    assert peers["data"] == {f"{DET}.pi-1": f"{neighbour}/v2/models/{DET}/artifact\n"}


def test_without_a_checksum_there_are_no_peers() -> None:
    fleet = _fleet()
    previous, now = _cache(fleet, {"pi-0": [DET]}), _cache(fleet, {"pi-0": [DET], "pi-1": [DET]})
    objects = _objects(fleet, now, previous, **{DET: {"url": "https://models.example/det.onnx"}})
    assert _named(objects, "ConfigMap", PEERS_CONFIGMAP)["data"] == {}
    fetch = _named(objects, "Deployment", object_name(DET, "pi-1"))["spec"]["template"]["spec"]["initContainers"][0]
    assert "--peers-file" not in fetch["args"]


def test_a_replica_in_a_shared_site_reads_its_peers_file_and_serves_its_file() -> None:
    fleet = _fleet()
    now = _cache(fleet, {"pi-1": [DET], "pi-4": [DET]})
    objects = _objects(fleet, now, now)
    shared = _named(objects, "Deployment", object_name(DET, "pi-1"))["spec"]["template"]["spec"]
    fetch = shared["initContainers"][0]
    assert fetch["args"][-2:] == ["--peers-file", f"{builders.PEERS_MOUNT}/{DET}.pi-1"]
    assert {"name": builders.PEERS_VOLUME, "configMap": {"name": PEERS_CONFIGMAP, "optional": True}} in shared[
        "volumes"
    ]
    assert "--serve-artifacts" in shared["containers"][0]["args"]
    alone = _named(objects, "Deployment", object_name(DET, "pi-4"))["spec"]["template"]["spec"]
    assert "--peers-file" not in alone["initContainers"][0]["args"]
    assert "--serve-artifacts" not in alone["containers"][0]["args"]


def test_a_running_replicas_manifest_does_not_move_with_its_neighbours() -> None:
    """Peers change every time a neighbour's placement does; the replica's template (and hash) must not."""
    fleet = _fleet()
    first = _cache(fleet, {"pi-0": [DET], "pi-1": [DET]})
    later = _cache(fleet, {"pi-1": [DET], "pi-2": [DET]})  # pi-0 dropped det, pi-2 took it from pi-1
    before = _named(_objects(fleet, first, _cache(fleet, {"pi-0": [DET]})), "Deployment", object_name(DET, "pi-1"))
    after = _named(_objects(fleet, later, first), "Deployment", object_name(DET, "pi-1"))
    assert manifest_hash(before) == manifest_hash(after)


def test_fleets_without_shared_sites_get_no_peers_objects() -> None:
    fleet = _fleet(sites={})
    previous, now = _cache(fleet, {"pi-0": [DET]}), _cache(fleet, {"pi-0": [DET], "pi-1": [DET]})
    objects = _objects(fleet, now, previous)
    assert not [o for o in objects if o["metadata"]["name"] == PEERS_CONFIGMAP]
    assert (
        "--serve-artifacts"
        not in _named(objects, "Deployment", object_name(DET, "pi-1"))["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
    )
