"""The operator's pure parts: fleet from resources, manifests from a plan, routing table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from edgeaigc.inference.routing_table import InvalidRoutingTable, parse_routing_table
from edgeaigc.operator import builders
from edgeaigc.operator import constants as c
from edgeaigc.operator.fleet import InvalidFleet, scenario_from_resources, unattached_cameras
from edgeaigc.policy.scenario import load_scenario
from edgeaigc.policy.system_model import Plan
from tests.e2e.conftest import REPO

EXAMPLES = [d for path in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]


def _kind(kind: str) -> list[dict]:
    return [d for d in EXAMPLES if d["kind"] == kind]


POLICY = {
    **_kind("PlacementPolicy")[0],
    "metadata": {"name": "traffic-city", "namespace": "traffic-city", "uid": "u-1"},
}


def _fleet():
    return scenario_from_resources(POLICY, _kind("EdgeNode"), _kind("InferenceModel"), _kind("Camera"))


def test_fleet_from_the_samples_matches_the_traffic_city_scenario() -> None:
    fleet, reference = _fleet(), load_scenario("traffic-city")
    assert (fleet.num_nodes, fleet.num_cameras, fleet.num_models) == (5, 40, 12)
    np.testing.assert_allclose(fleet.node_storage_mb, reference.node_storage_mb)
    by_name = dict(zip(fleet.model_names, fleet.model_size_mb, strict=True))
    for name, size in zip(reference.model_names, reference.model_size_mb, strict=True):
        assert by_name[name] == pytest.approx(size, rel=1e-3)


def test_cameras_on_unknown_edge_nodes_are_left_out_and_reported() -> None:
    cameras = [*_kind("Camera"), {"metadata": {"name": "lost"}, "spec": {"edgeNode": "pi-99", "fps": 1}}]
    assert scenario_from_resources(POLICY, _kind("EdgeNode"), _kind("InferenceModel"), cameras).num_cameras == 40
    assert unattached_cameras(_kind("EdgeNode"), cameras) == ["lost"]


def test_an_empty_fleet_or_a_bad_quantity_is_a_clear_error() -> None:
    with pytest.raises(InvalidFleet, match="at least one EdgeNode"):
        scenario_from_resources(POLICY, [], _kind("InferenceModel"), _kind("Camera"))
    node = {**_kind("EdgeNode")[0], "spec": {**_kind("EdgeNode")[0]["spec"], "modelStorage": "lots"}}
    with pytest.raises(InvalidFleet, match=r"spec\.modelStorage"):
        scenario_from_resources(POLICY, [node], _kind("InferenceModel"), _kind("Camera"))


def _plan(fleet) -> Plan:
    cache = np.zeros((fleet.num_nodes, fleet.num_models))
    det = fleet.model_names.index("det-yolox-nano-day")
    cache[0, det] = 1
    compute = cache * 0.5
    bandwidth = np.full(fleet.num_cameras, 1 / 8)
    return Plan(cache, compute, bandwidth)


def test_desired_objects_for_a_plan() -> None:
    fleet = _fleet()
    objects = builders.desired_objects(POLICY, fleet, _plan(fleet), {n: n for n in fleet.node_names}, generation=3)
    kinds = [o["kind"] for o in objects]
    # 12 cloud Deployments + Services, 1 edge Deployment + Service, 1 routing ConfigMap.
    assert kinds.count("Deployment") == 13 and kinds.count("Service") == 13 and kinds[-1] == "ConfigMap"
    edge = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_EDGE_INFERENCE
    )
    assert edge["metadata"]["name"] == "edgeaigc-det-yolox-nano-day-pi-0"
    assert edge["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "pi-0"}
    container = edge["spec"]["template"]["spec"]["containers"][0]
    # Half of a 4-core Pi (after the 50m floor); memory = 96 Mi + 3 x 3.7 Mi.
    assert container["resources"]["limits"] == {"cpu": f"{50 + 3950 // 2}m", "memory": "108Mi"}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in objects)
    table = parse_routing_table(objects[-1]["data"][c.ROUTING_TABLE_KEY])
    assert table.generation == 3
    local, cloud = table.route("pi-0", "det-yolox-nano-day")
    assert local[0].url == "http://edgeaigc-det-yolox-nano-day-pi-0.traffic-city.svc:8080"
    assert cloud == "http://edgeaigc-cloud-det-yolox-nano-day.traffic-city.svc:8080"
    assert table.route("pi-1", "det-yolox-nano-day")[0] == ()
    assert table.edge_nodes["pi-0"].camera_bandwidth_share["camera-0"] == 0.125


def test_cpu_split_has_a_floor_and_never_exceeds_the_node() -> None:
    cpu = builders.cpu_millicores(np.array([0.0001, 0.3, 0.6999]), 4)
    assert cpu.min() >= builders.MIN_CPU_MILLICORES
    assert cpu.sum() <= 4000
    # More models than the floor allows: the floor shrinks instead of overflowing the node.
    assert builders.cpu_millicores(np.full(100, 0.01), 1).sum() <= 1000


def test_long_names_are_valid_dns_labels() -> None:
    name = builders.object_name("a-very-long-model-name-for-a-detector-variant", "an-edge-node-with-a-long-name")
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    assert name != builders.object_name(
        "a-very-long-model-name-for-a-detector-variant", "an-edge-node-with-a-long-name2"
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(generation=-1), "generation"),
        (lambda d: d["edgeNodes"]["pi-0"]["models"]["m"].update(endpoints=[]), "edgeNodes.pi-0.models.m.endpoints"),
        (lambda d: d["edgeNodes"]["pi-0"]["cameras"]["cam"].update(bandwidthShare=1.5), "bandwidthShare"),
        (lambda d: d["cloud"]["m"].update(url="ftp://x"), "cloud.m.url"),
    ],
)
def test_invalid_routing_tables_name_the_field(mutate, message: str) -> None:
    document = {
        "apiVersion": "edgeaigc.io/v1alpha1",
        "kind": "RoutingTable",
        "generation": 1,
        "edgeNodes": {
            "pi-0": {
                "models": {"m": {"endpoints": [{"url": "http://a:1"}], "computeShare": 0.5}},
                "cameras": {"cam": {"bandwidthShare": 0.5}},
            }
        },
        "cloud": {"m": {"url": "http://cloud:1"}},
    }
    parse_routing_table(json.dumps(document))
    mutate(document)
    with pytest.raises(InvalidRoutingTable, match=message):
        parse_routing_table(json.dumps(document))
