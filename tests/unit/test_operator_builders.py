"""The operator's pure parts: fleet from resources, manifests from a plan, routing table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import yaml

from edgeaigc.inference.gateway.routing_table import (
    EdgeNodeRoutes,
    Endpoint,
    InvalidRoutingTable,
    LocalModel,
    RoutingTable,
    parse_routing_table,
)
from edgeaigc.operator import builders
from edgeaigc.operator import constants as c
from edgeaigc.policy.fleet import InvalidFleet, scenario_from_resources, unattached_cameras
from edgeaigc.policy.scenario import Scenario, load_scenario
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


def _desired(fleet: Scenario, plan: Plan, nodes: dict[str, str], **options: Any) -> list[dict]:
    """Every object of ``plan``, with a routing table of generation 1."""
    table = builders.build_routing_table(POLICY, fleet, plan, 1, nodes)
    return builders.desired_objects(POLICY, fleet, plan, nodes, table, **options)


def test_desired_objects_for_a_plan() -> None:
    fleet = _fleet()
    node_names = {n: f"node-{n}" for n in fleet.node_names}
    plan = _plan(fleet)
    table = builders.build_routing_table(POLICY, fleet, plan, 3, node_names)
    objects = builders.desired_objects(POLICY, fleet, plan, node_names, table)
    kinds = [o["kind"] for o in objects]
    # 12 cloud Deployments + Services, 1 edge Deployment + Service, 1 routing ConfigMap.
    assert kinds.count("Deployment") == 13 and kinds.count("Service") == 13 and kinds[-1] == "ConfigMap"
    edge = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_EDGE_INFERENCE
    )
    assert edge["metadata"]["name"] == "edgeaigc-det-yolox-nano-day-pi-0"
    # No room on a Pi for a surge copy: the old pod goes first.
    assert edge["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert edge["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-pi-0"}
    container = edge["spec"]["template"]["spec"]["containers"][0]
    # Half of a 4-core Pi (after the 50m floor); memory = 192 Mi + 3 x 3.7 Mi.
    assert container["resources"]["limits"] == {"cpu": f"{50 + 3950 // 2}m", "memory": "204Mi"}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u-1" for o in objects)
    table = parse_routing_table(objects[-1]["data"][c.ROUTING_TABLE_KEY])
    assert table.generation == 3
    local, cloud = table.route("pi-0", "det-yolox-nano-day")
    assert local[0].url == "http://edgeaigc-det-yolox-nano-day-pi-0.traffic-city.svc:8080"
    assert cloud == "http://edgeaigc-cloud-det-yolox-nano-day.traffic-city.svc:8080"
    assert table.route("pi-1", "det-yolox-nano-day")[0] == ()
    assert table.edge_nodes["pi-0"].camera_bandwidth_share["camera-0"] == 0.125
    # A gateway that knows only its Kubernetes node finds its EdgeNode; the format round-trips.
    assert table.edge_node_on("node-pi-1") == "pi-1" and table.edge_node_on("cloud-0") is None
    assert parse_routing_table(table.to_json()) == table


def test_with_a_tls_secret_the_cloud_replicas_serve_https_and_the_table_says_so() -> None:
    fleet = _fleet()
    node_names = {n: f"node-{n}" for n in fleet.node_names}
    plan = _plan(fleet)
    table = builders.build_routing_table(POLICY, fleet, plan, 1, node_names, cloud_tls=True)
    local, cloud = table.route("pi-0", "det-yolox-nano-day")
    assert cloud == "https://edgeaigc-cloud-det-yolox-nano-day.traffic-city.svc:8080"
    assert local[0].url.startswith("http://")  # the replica on the gateway's own node: no WAN, no TLS
    objects = builders.desired_objects(POLICY, fleet, plan, node_names, table, cloud_tls_secret="city-tls")
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if deployment["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_CLOUD_INFERENCE:
            # the certificate and key only: a server needs no CA
            assert volumes["tls"]["secret"]["secretName"] == "city-tls"
            assert [item["key"] for item in volumes["tls"]["secret"]["items"]] == ["tls.crt", "tls.key"]
            assert container["volumeMounts"] == [{"name": "tls", "mountPath": c.TLS_MOUNT_PATH, "readOnly": True}]
            assert container["args"][-4:] == [
                "--tls-cert", f"{c.TLS_MOUNT_PATH}/tls.crt", "--tls-key", f"{c.TLS_MOUNT_PATH}/tls.key"
            ]  # fmt: skip
            assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        else:
            assert "tls" not in volumes and "--tls-cert" not in container["args"]
            assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    plain = builders.desired_objects(POLICY, fleet, plan, node_names, table, cloud_tls_secret="")
    assert all("--tls-cert" not in o["spec"]["template"]["spec"]["containers"][0]["args"] for o in plain[:-1:2])


def test_with_mutual_tls_the_cloud_replicas_require_client_certificates_of_the_secrets_ca() -> None:
    fleet = _fleet()
    node_names = {n: f"node-{n}" for n in fleet.node_names}
    plan = _plan(fleet)
    table = builders.build_routing_table(POLICY, fleet, plan, 1, node_names, cloud_tls=True)
    objects = builders.desired_objects(
        POLICY, fleet, plan, node_names, table, cloud_tls_secret="city-tls", cloud_mutual_tls=True
    )
    clouds = [o for o in objects if o["metadata"]["labels"].get(c.LABEL_COMPONENT) == c.COMPONENT_CLOUD_INFERENCE]
    assert clouds and all(o["kind"] in ("Deployment", "Service") for o in clouds)
    for deployment in (o for o in clouds if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"][-2:] == ["--tls-client-ca", f"{c.TLS_MOUNT_PATH}/ca.crt"]
        tls = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
        assert [item["key"] for item in tls["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    edge = [o for o in objects if o["kind"] == "Deployment" and o not in clouds]
    assert edge and all("--tls-client-ca" not in o["spec"]["template"]["spec"]["containers"][0]["args"] for o in edge)


def test_the_operator_is_told_the_tls_secret_by_its_environment() -> None:
    probe = "from edgeaigc.operator import constants as c; print(c.CLOUD_TLS_SECRET)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"EDGEAIGC_CLOUD_TLS_SECRET": "s"}
    )
    assert result.stdout.strip() == "s", result.stderr


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
        (lambda d: d["edgeNodes"]["pi-0"].update(nodeName=""), "edgeNodes.pi-0.nodeName"),
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


# -- model delivery ----------------------------------------------------------------------------

SHA = "ab" * 32
ARTIFACTS = {
    "det-yolox-nano-day": {"url": "https://models.example/yolox-nano.onnx", "sha256": SHA},
    "det-yolox-nano-night": {"persistentVolumeClaim": {"claimName": "models", "path": "/detectors/night.onnx"}},
    "cls-small": {"image": "registry.example/models/mobilenet:1", "imagePath": "onnx/model.onnx"},
}


def _deployments(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """(component, model) -> Deployment, for the edge Deployment on pi-0 and every cloud Deployment."""
    return {
        (o["metadata"]["labels"][c.LABEL_COMPONENT], o["metadata"]["labels"][c.LABEL_MODEL]): o
        for o in objects
        if o["kind"] == "Deployment"
    }


def _plan_caching(fleet, models: list[str]) -> Plan:
    cache = np.zeros((fleet.num_nodes, fleet.num_models))
    for model in models:
        cache[0, fleet.model_names.index(model)] = 1
    return Plan(cache, cache / len(models), np.full(fleet.num_cameras, 1 / 8))


def _restricted_violations(pod_spec: dict) -> list[str]:
    """What Pod Security "restricted" (v1.36) would refuse in a pod spec (containers and volumes)."""
    problems = []
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        context = container.get("securityContext", {})
        expected = {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        problems += [f"{container['name']}.{key}" for key, value in expected.items() if context.get(key) != value]
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim"}
    allowed |= {"projected", "secret"}
    problems += [v["name"] for v in pod_spec.get("volumes", []) if not set(v) - {"name"} <= allowed]
    return problems


def test_models_with_an_artifact_get_a_models_volume_and_a_fetch_container() -> None:
    fleet = _fleet()
    plan = _plan_caching(fleet, list(ARTIFACTS))
    nodes = {n: n for n in fleet.node_names}
    deployments = _deployments(_desired(fleet, plan, nodes, artifacts=ARTIFACTS))
    for component in (c.COMPONENT_EDGE_INFERENCE, c.COMPONENT_CLOUD_INFERENCE):
        pod = deployments[(component, "det-yolox-nano-day")]["spec"]["template"]["spec"]
        # spec.size 3789Ki is the largest file accepted; the volume holds it plus config.yaml.
        assert pod["volumes"] == [{"name": "models", "emptyDir": {"sizeLimit": "5Mi"}}]
        (fetch,) = pod["initContainers"]
        assert fetch["args"] == [
            "fetch-model",
            "--url",
            "https://models.example/yolox-nano.onnx",
            "--sha256",
            SHA,
            "--dest",
            "/models/det-yolox-nano-day",
            "--max-bytes",
            str(3789 * 1024),
        ]
        assert fetch["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
        assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
        (inference,) = pod["containers"]
        assert fetch["image"] == inference["image"]
        assert inference["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]
        assert inference["args"][:3] == ["serve", "--model-repository", "/models"]
        # Ephemeral storage covers the volume and the logs; the init container asks for no more
        # than the server (a pod's request is max(init, sum of containers)) and its CPU is fixed.
        for bound in ("requests", "limits"):
            assert inference["resources"][bound]["ephemeral-storage"] == "37Mi"
            assert fetch["resources"][bound]["ephemeral-storage"] == "37Mi"
            assert fetch["resources"][bound]["memory"] == inference["resources"][bound]["memory"]
            assert fetch["resources"][bound]["cpu"] == f"{builders.MIN_CPU_MILLICORES}m"
        assert _restricted_violations(pod) == []


def test_volume_and_image_artifacts_are_mounted_read_only_and_copied() -> None:
    fleet = _fleet()
    plan = _plan_caching(fleet, list(ARTIFACTS))
    deployments = _deployments(_desired(fleet, plan, {n: n for n in fleet.node_names}, artifacts=ARTIFACTS))
    claim = deployments[(c.COMPONENT_EDGE_INFERENCE, "det-yolox-nano-night")]["spec"]["template"]["spec"]
    claim_volume = {"name": "artifact", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    assert claim["volumes"][1] == claim_volume
    fetch = claim["initContainers"][0]
    assert fetch["args"][1:3] == ["--path", "/artifact/detectors/night.onnx"]
    assert "--sha256" not in fetch["args"]  # optional for a volume: copied as is, its digest recorded
    assert {"name": "artifact", "mountPath": "/artifact", "readOnly": True} in fetch["volumeMounts"]
    image = deployments[(c.COMPONENT_CLOUD_INFERENCE, "cls-small")]["spec"]["template"]["spec"]
    assert image["volumes"][1] == {"name": "artifact", "image": {"reference": "registry.example/models/mobilenet:1"}}
    assert image["initContainers"][0]["args"][1:3] == ["--path", "/artifact/onnx/model.onnx"]
    for pod in (claim, image):
        assert _restricted_violations(pod) == []
        # The server never mounts the source, only the verified copy.
        assert [m["name"] for m in pod["containers"][0]["volumeMounts"]] == ["models"]


def test_models_without_an_artifact_keep_their_pods_as_before() -> None:
    fleet = _fleet()
    plan = _plan_caching(fleet, list(ARTIFACTS))
    nodes = {n: n for n in fleet.node_names}
    before = _desired(fleet, plan, nodes)
    after = _desired(fleet, plan, nodes, artifacts=ARTIFACTS)
    changed = [a["metadata"]["name"] for a, b in zip(after, before, strict=True) if a != b]
    assert sorted(changed) == sorted(
        builders.object_name(*parts) for model in ARTIFACTS for parts in (("cloud", model), (model, "pi-0"))
    )
    pod = _deployments(before)[(c.COMPONENT_EDGE_INFERENCE, "det-yolox-nano-day")]["spec"]["template"]["spec"]
    assert "initContainers" not in pod and "volumes" not in pod
    assert _restricted_violations(pod) == []


def test_artifacts_come_from_the_inference_models() -> None:
    models = _kind("InferenceModel")
    with_artifact = {**models[0], "spec": {**models[0]["spec"], "artifact": ARTIFACTS["det-yolox-nano-day"]}}
    assert builders.model_artifacts(models) == {}
    assert builders.model_artifacts([with_artifact, *models[1:]]) == {
        models[0]["metadata"]["name"]: ARTIFACTS["det-yolox-nano-day"]
    }


def test_a_path_cannot_climb_out_of_the_artifact_mount() -> None:
    pod = builders.build_cloud_deployment(
        POLICY, "m", "img", {"image": "reg/m:1", "imagePath": "../../etc/passwd"}, model_size_mib=1
    )["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][1:3] == ["--path", "/artifact/etc/passwd"]


def test_an_artifact_needs_the_model_size() -> None:
    with pytest.raises(ValueError, match="size"):
        builders.build_cloud_deployment(POLICY, "m", "img", ARTIFACTS["det-yolox-nano-day"])


def test_routing_table_gives_each_nodes_uplink_in_bytes_per_second() -> None:
    fleet = _fleet()
    table = builders.build_routing_table(POLICY, fleet, _plan(fleet), 1, {})
    for e, node in enumerate(fleet.node_names):
        median_efficiency = float(np.median(fleet.link_states))  # bit/s/Hz
        expected = fleet.node_bandwidth_mhz[e] * 1e6 * median_efficiency / 8
        assert table.edge_nodes[node].uplink_bytes_per_second == pytest.approx(expected, abs=1)
        assert sum(table.edge_nodes[node].camera_bandwidth_share.values()) > 0


def test_a_cloud_replica_with_an_artifact_keeps_its_tls_mount() -> None:
    artifact = {"url": "http://artifacts/m.onnx", "sha256": "0" * 64}
    policy = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}}
    deployment = builders.build_cloud_deployment(policy, "m", "image", artifact, 3.0, tls_secret="tls", mutual_tls=True)
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"tls": c.TLS_MOUNT_PATH, "models": "/models"}
    assert {v["name"] for v in pod["volumes"]} == {"tls", "models"}


def test_cloud_replica_resources_are_kubernetes_quantities_checked_once() -> None:
    assert builders.cloud_replica_resources("1", "1Gi") == (1000, 1024)
    assert builders.cloud_replica_resources("500m", "768Mi") == (500, 768)
    for cpu, memory, reason in (("lots", "1Gi", "cpu='lots'"), ("10m", "1Gi", "at least 50m"), ("1", "64Mi", "192Mi")):
        with pytest.raises(ValueError, match=reason):
            builders.cloud_replica_resources(cpu, memory)
    probe = (
        "from edgeaigc.operator import builders as b; "
        "d = b.build_cloud_deployment({'metadata': {'name': 'p', 'namespace': 'n', 'uid': 'u'}}, 'm', 'image'); "
        "print(d['spec']['template']['spec']['containers'][0]['resources']['limits'])"
    )
    env = {**os.environ, "EDGEAIGC_CLOUD_REPLICA_CPU": "500m", "EDGEAIGC_CLOUD_REPLICA_MEMORY": "512Mi"}
    built = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert built.stdout.strip() == "{'cpu': '500m', 'memory': '512Mi'}", built.stderr  # what the chart's value sets
    env = {**os.environ, "EDGEAIGC_CLOUD_REPLICA_CPU": "lots"}
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "operator", "-n", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and "EDGEAIGC_CLOUD_REPLICA_CPU" in result.stderr, result.stderr


def _city_routing_table(nodes: int, replicas_per_node: int) -> RoutingTable:
    """A routing table of ``nodes`` edge nodes with four cameras and ``replicas_per_node`` replicas each."""
    edge_nodes = {
        f"edge-{e:04d}": EdgeNodeRoutes(
            {
                f"model-{m:02d}": LocalModel(
                    (Endpoint(builders.service_url(f"edgeaigc-model-{m:02d}-edge-{e:04d}", "city")),), 0.1234
                )
                for m in range(replicas_per_node)
            },
            {f"camera-{4 * e + k:04d}": 0.2513 for k in range(4)},
            f"kwok-edge-{e:04d}",
            7500000.0,
        )
        for e in range(nodes)
    }
    cloud = {f"model-{m:02d}": builders.service_url(f"edgeaigc-city-cloud-model-{m:02d}", "city") for m in range(50)}
    return RoutingTable(7, edge_nodes, cloud)


def test_a_city_sized_routing_table_fits_a_configmap_and_a_larger_one_is_refused_before_any_write() -> None:
    # 1000 nodes x 3 replicas x 4 cameras: 1.17 MB indented, refused by the API server (422) mid-reconcile.
    city = _city_routing_table(1000, 3)
    configmap = builders.build_routing_configmap(POLICY, city)
    text = configmap["data"][c.ROUTING_TABLE_KEY]
    assert len(text.encode()) < builders.ROUTING_TABLE_MAX_BYTES and parse_routing_table(text) == city
    with pytest.raises(builders.RoutingTableTooLarge, match=r"2000 edge nodes, 10000 edge replicas.*edgeNodeSelector"):
        builders.build_routing_configmap(POLICY, _city_routing_table(2000, 5))
