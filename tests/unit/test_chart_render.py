"""The Helm chart without a cluster: lint, schema, rendering, RBAC, files and values documentation.

Uses the pinned helm (``edgeaigc cluster build`` fetches it); skipped when it cannot be obtained.
What the API server says about the rendered objects is in ``tests/e2e/test_chart.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeaigc.cluster.components import BuildError, ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgeaigc"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    try:
        binary = ensure_helm(progress=print)
    except BuildError as error:
        pytest.skip(f"helm cannot be obtained: {error}")
    home = tmp_path_factory.mktemp("helm-home")
    return [str(binary), f"--repository-cache={home}", f"--repository-config={home / 'repositories.yaml'}"]


def run(helm: list[str], *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*helm, *arguments], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(arguments)} failed:\n{result.stderr}")
    return result


def render(helm: list[str], *values: str, namespace: str = "city") -> list[dict[str, Any]]:
    out = run(helm, "template", "rel", str(CHART), "-n", namespace, *values).stdout
    return [document for document in yaml.safe_load_all(out) if document]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def test_lint_is_clean_with_the_defaults_and_every_ci_values_file(helm: list[str]) -> None:
    run(helm, "lint", "--strict", str(CHART))
    for values in sorted((CHART / "ci").glob("*.yaml")):
        run(helm, "lint", "--strict", str(CHART), "-f", str(values))


def _object_schemas(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append((path, node))
        for key, child in node.items():
            found += _object_schemas(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _object_schemas(child, f"{path}/{index}")
    return found


def test_schema_closes_every_object_and_helm_enforces_it(helm: list[str]) -> None:
    objects = _object_schemas(SCHEMA)
    assert len(objects) > 10
    assert all(schema.get("additionalProperties") is False for _, schema in objects), [
        path for path, schema in objects if schema.get("additionalProperties") is not False
    ]
    # A misspelt key anywhere is an error, not silently ignored.
    for key in ("replica", "operator.replica", "operator.resources.request", "gateway.nodeselector",
                "metrics.serviceMonitor.intervall", "image.tags", "tests.timeout"):  # fmt: skip
        result = run(helm, "template", "rel", str(CHART), "--set", f"{key}=1", check=False)
        assert result.returncode != 0 and "additional properties" in result.stderr.lower(), key
    bad = {
        # Without leader election every replica would act: the default 2 replicas are refused.
        "operator.leaderElection.enabled=false": "replicas",
        "operator.leaderElection.leaseDuration=0": "leaseDuration",
        # client-go's rules: a leader stops (renew deadline) before a standby may take over (lease).
        "operator.leaderElection.leaseDuration=6": "longer than renewDeadline",
        "operator.leaderElection.retryPeriod=5": "1.2 x retryPeriod",
        "runAsUser=0": "runAsUser",
        "gateway.placementPolicy=" + "p" * 47: "placementPolicy",  # its routing ConfigMap name > 63
        "policy.actors={nope}": "actors",
    }
    for setting, field in bad.items():
        result = run(helm, "template", "rel", str(CHART), "--set", setting, check=False)
        assert result.returncode != 0 and field in result.stderr, setting


def _schema_at(path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for key in path:
        if node is None or "properties" not in node:
            return None
        node = node["properties"].get(key)
    return node


def test_every_values_key_is_commented() -> None:
    """Every key of values.yaml has a comment right above it, down to the chart's own settings
    (the contents of Kubernetes-shaped values such as ``resources`` are that key's value)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        stack = [(i, k) for i, k in stack if i < indent]
        parent = _schema_at([k for _, k in stack])
        stack.append((indent, key))
        if parent is None or "$ref" in parent:  # inside a Kubernetes-shaped value
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(".".join(k for _, k in stack))
    assert not undocumented, undocumented
    # ...and the schema knows every key the file has (and the file every key the schema has).
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: dict[str, Any], schema: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, value in node.items():
            found.add(prefix + key)
            child = schema["properties"].get(key, {})
            if isinstance(value, dict) and "properties" in child:
                found |= keys(value, child, f"{prefix}{key}.")
        return found

    def schema_keys(schema: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, child in schema["properties"].items():
            if key == "global":
                continue
            found.add(prefix + key)
            if "properties" in child:
                found |= schema_keys(child, f"{prefix}{key}.")
        return found

    assert keys(values, SCHEMA, "") == schema_keys(SCHEMA, "")


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet", "Job")
    ]


def test_every_pod_is_written_for_the_restricted_profile(helm: list[str]) -> None:
    model = '{"name":"det","url":"https://models.example/det.onnx","sha256":"' + "0" * 64 + '","maxBytes":4000000}'
    objects = render(helm, "--set-json", f"cloudInference.models=[{model}]")
    pods = _pod_specs(objects)
    assert {name.split("/")[0] for name, _ in pods} == {"Deployment", "DaemonSet", "Job"}  # the Job: helm test
    for name, spec in pods:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert "hostPort" not in json.dumps(container.get("ports", [])), name
            # A read-only root needs a writable /tmp (actor files, matplotlib's config).
            if not name.startswith("Job/"):
                assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name
    cloud = find(objects, "Deployment", "rel-edgeaigc-cloud")[0]["spec"]["template"]["spec"]
    assert cloud["initContainers"][0]["args"] == [
        "fetch-model", "--url=https://models.example/det.onnx", f"--sha256={'0' * 64}", "--dest=/models/det",
        "--max-bytes=4000000",
    ]  # fmt: skip
    # Only the operator talks to the API server.
    tokens = {name: spec.get("automountServiceAccountToken", True) for name, spec in pods}
    assert tokens == {name: name == "Deployment/rel-edgeaigc-operator" for name in tokens}


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_namespaced_rbac_is_a_role_per_watched_namespace(helm: list[str]) -> None:
    objects = render(helm, "--set", "operator.watchNamespaces={east,west}")
    roles = [r for r in find(objects, "Role") if r["metadata"]["name"] == "rel-edgeaigc-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["east", "west"]
    bindings = [b for b in find(objects, "RoleBinding") if b["metadata"]["name"] == "rel-edgeaigc-operator"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["east", "west"]
    rules = _rules(roles[0])
    assert not any("*" in part for rule in rules for part in rule)
    assert not any(resource in ("secrets", "namespaces", "customresourcedefinitions") for _, resource, _ in rules)
    # Separate rules for each CR, its /status and /finalizers, and what it creates.
    assert ("edgeaigc.io", "placementpolicies/status", "patch") in rules
    assert ("edgeaigc.io", "edgenodes", "patch") not in rules and ("edgeaigc.io", "cameras", "list") in rules
    assert ("apps", "deployments", "delete") in rules and ("", "pods", "delete") not in rules
    # The operator's object caches list and watch what each decision reads (operator/object_cache.py).
    for group, resource in [("edgeaigc.io", "edgenodes"), ("edgeaigc.io", "inferencemodels"),
                            ("edgeaigc.io", "cameras"), ("apps", "deployments"), ("", "services"),
                            ("", "configmaps"), ("", "pods")]:  # fmt: skip
        assert {(group, resource, "list"), (group, resource, "watch")} <= rules, resource
    assert not any(group == "kopf.dev" for group, _, _ in rules), "no kopf peering: the Lease decides who acts"
    _assert_leader_election_role(objects)
    # Cluster-wide: nodes, read-only, and nothing else.
    (cluster_role,) = find(objects, "ClusterRole")
    assert _rules(cluster_role) == {("", "nodes", "list"), ("", "nodes", "watch")}
    operator = find(objects, "Deployment", "rel-edgeaigc-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert operator["args"][:4] == ["operator", "--namespace=east", "--namespace=west", "--leader-elect"]
    assert not any(arg.startswith("--peering") for arg in operator["args"])
    # The default: the release namespace only.
    (role,) = find(render(helm), "Role", "rel-edgeaigc-operator")
    assert role["metadata"]["namespace"] == "city"


def _assert_leader_election_role(objects: list[dict[str, Any]]) -> None:
    """The Lease in the release namespace: create, and get/update of the chart's Lease only."""
    (role,) = find(objects, "Role", "rel-edgeaigc-leader-election")
    assert role["metadata"]["namespace"] == "city"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["rel-edgeaigc"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["rel-edgeaigc-operator"],
         "verbs": ["get"]},  # its own, once: the owner of the Lease
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]  # fmt: skip
    (binding,) = find(objects, "RoleBinding", "rel-edgeaigc-leader-election")
    assert binding["subjects"][0]["name"] == "rel-edgeaigc-operator"


def test_two_replicas_elect_a_leader_by_default_and_one_acts_alone_without(helm: list[str]) -> None:
    deployment = find(render(helm), "Deployment", "rel-edgeaigc-operator")[0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {
        "--leader-elect",
        "--leader-election-namespace=city",
        "--leader-election-id=rel-edgeaigc",
        "--leader-election-identity=$(POD_NAME)",
        "--leader-election-owner-service-account=rel-edgeaigc-operator",
        "--lease-duration=10",
        "--renew-deadline=6",
        "--retry-period=1",
    } <= set(container["args"])
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (budget,) = find(render(helm), "PodDisruptionBudget", "rel-edgeaigc-operator")
    assert budget["spec"]["minAvailable"] == 1  # a drain never evicts the last standby
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    alone = render(helm, "--set", "operator.leaderElection.enabled=false", "--set", "operator.replicas=1")
    assert not find(alone, "PodDisruptionBudget")
    deployment = find(alone, "Deployment", "rel-edgeaigc-operator")[0]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert not any("leader" in arg for arg in deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert not find(alone, "Role", "rel-edgeaigc-leader-election")


def test_cluster_wide_rbac_is_a_cluster_role_and_the_lease_stays_in_the_release_namespace(helm: list[str]) -> None:
    objects = render(helm, "--set", "operator.clusterWide=true")
    assert not find(objects, "Role", "rel-edgeaigc-operator")
    operator_role = find(objects, "ClusterRole", "city-rel-edgeaigc-operator")[0]
    assert ("apps", "deployments", "patch") in _rules(operator_role)
    assert not any(group in ("kopf.dev", "coordination.k8s.io") for group, _, _ in _rules(operator_role))
    _assert_leader_election_role(objects)
    operator = find(objects, "Deployment", "rel-edgeaigc-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in operator["args"]
    both = run(helm, "template", "rel", str(CHART), "--set", "operator.clusterWide=true",
               "--set", "operator.watchNamespaces={a}", check=False)  # fmt: skip
    assert both.returncode != 0 and "exclude each other" in both.stderr


def test_images_default_to_the_app_version_and_the_operator_is_told_the_inference_image(helm: list[str]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    for values, tag in (([], app_version), (["--set", "image.tag=9.9.9"], "9.9.9")):
        objects = render(helm, *values)
        operator = find(objects, "Deployment", "rel-edgeaigc-operator")[0]["spec"]["template"]["spec"]
        assert operator["containers"][0]["image"] == f"ghcr.io/edgeaigc/operator:{tag}"
        env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
        assert env["EDGEAIGC_INFERENCE_IMAGE"] == f"ghcr.io/edgeaigc/inference:{tag}"
        gateway = find(objects, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]
        assert gateway["image"] == f"ghcr.io/edgeaigc/inference:{tag}"
    # The operator reads that variable (operator/constants.py).
    probe = "from edgeaigc.operator import constants; print(constants.DEFAULT_INFERENCE_IMAGE)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"EDGEAIGC_INFERENCE_IMAGE": "x/y:1"}
    )
    assert result.stdout.strip() == "x/y:1", result.stderr


def test_gateways_follow_the_routing_table_of_their_policy_on_their_own_node(helm: list[str]) -> None:
    (daemonset,) = find(render(helm, "--set", "gateway.placementPolicy=north"), "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"edgeaigc.io/tier": "edge"}
    routing = next(v for v in spec["volumes"] if v["name"] == "routing")
    # operator/builders.py names it object_name(policy, "routing").
    assert routing["configMap"] == {"name": "edgeaigc-north-routing", "optional": True}
    assert "--node-name=$(NODE_NAME)" in spec["containers"][0]["args"]


def test_cameras_authenticate_by_default_and_turning_it_off_is_explicit(helm: list[str]) -> None:
    (daemonset,) = find(render(helm), "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert "--camera-tokens=/etc/edgeaigc/cameras" in spec["containers"][0]["args"]
    tokens = next(v for v in spec["volumes"] if v["name"] == "camera-tokens")
    # optional, like the routing table: until the Secret exists every request gets 401
    assert tokens["secret"] == {"secretName": "edgeaigc-camera-tokens", "optional": True, "defaultMode": 0o440}
    assert {"name": "camera-tokens", "mountPath": "/etc/edgeaigc/cameras", "readOnly": True} in spec["containers"][0][
        "volumeMounts"
    ]
    (open_daemonset,) = find(render(helm, "--set", "auth.cameras=false"), "DaemonSet")
    open_spec = open_daemonset["spec"]["template"]["spec"]
    assert "--no-camera-auth" in open_spec["containers"][0]["args"]
    assert all(v["name"] != "camera-tokens" for v in open_spec["volumes"])


def test_tls_serves_the_cloud_from_the_secret_and_the_gateways_trust_its_ca(helm: list[str]) -> None:
    plain = render(helm)
    (cloud,) = find(plain, "Deployment", "rel-edgeaigc-cloud")
    assert "--tls-cert=/etc/edgeaigc/tls/tls.crt" not in cloud["spec"]["template"]["spec"]["containers"][0]["args"]

    objects = render(helm, "--set", "tls.enabled=true", "--set", "tls.secretName=city-tls")
    (cloud,) = find(objects, "Deployment", "rel-edgeaigc-cloud")
    pod = cloud["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert {"--tls-cert=/etc/edgeaigc/tls/tls.crt", "--tls-key=/etc/edgeaigc/tls/tls.key"} <= set(server["args"])
    assert server["readinessProbe"]["httpGet"]["scheme"] == server["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
    assert tls["secretName"] == "city-tls" and [i["key"] for i in tls["items"]] == ["tls.crt", "tls.key"]
    assert cloud["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"] == "https"

    (daemonset,) = find(objects, "DaemonSet")
    gateway = daemonset["spec"]["template"]["spec"]
    assert "--cloud-ca=/etc/edgeaigc/tls/ca.crt" in gateway["containers"][0]["args"]
    ca_only = next(v for v in gateway["volumes"] if v["name"] == "tls-ca")["secret"]
    assert ca_only == {"secretName": "city-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}  # never the key

    (operator,) = find(objects, "Deployment", "rel-edgeaigc-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGEAIGC_CLOUD_TLS_SECRET"] == "city-tls"  # its cloud replicas serve HTTPS too
    (job,) = find(objects, "Job")
    test_pod = job["spec"]["template"]["spec"]
    assert any(a.startswith("https://rel-edgeaigc-cloud.city.svc") for a in test_pod["containers"][0]["args"])
    assert next(v for v in test_pod["volumes"] if v["name"] == "tls-ca")["secret"]["items"] == [
        {"key": "ca.crt", "path": "ca.crt"}
    ]


def test_mutual_tls_wires_the_client_ca_into_the_clouds_and_a_client_certificate_into_the_gateways(
    helm: list[str],
) -> None:
    objects = render(helm, "--set", "tls.enabled=true", "--set", "tls.mutual=true")
    (cloud_deployment,) = find(objects, "Deployment", "rel-edgeaigc-cloud")
    cloud = cloud_deployment["spec"]["template"]["spec"]
    assert "--tls-client-ca=/etc/edgeaigc/tls/ca.crt" in cloud["containers"][0]["args"]
    assert [i["key"] for i in next(v for v in cloud["volumes"] if v["name"] == "tls")["secret"]["items"]] == [
        "tls.crt", "tls.key", "ca.crt"
    ]  # fmt: skip
    (gateway_set,) = find(objects, "DaemonSet", "rel-edgeaigc-gateway")
    gateway = gateway_set["spec"]["template"]["spec"]
    args = gateway["containers"][0]["args"]
    assert "--cloud-client-cert=/etc/edgeaigc/client-tls/tls.crt" in args
    assert "--cloud-client-key=/etc/edgeaigc/client-tls/tls.key" in args
    client = next(v for v in gateway["volumes"] if v["name"] == "client-tls")["secret"]
    assert client["secretName"] == "edgeaigc-gateway-client-tls"
    (operator_deployment,) = find(objects, "Deployment", "rel-edgeaigc-operator")
    operator = operator_deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "EDGEAIGC_CLOUD_MUTUAL_TLS", "value": "true"} in operator["env"]
    # mutual TLS without TLS is nothing: the flags appear only with tls.enabled
    (plain,) = find(render(helm, "--set", "tls.mutual=true"), "DaemonSet", "rel-edgeaigc-gateway")
    assert not any("--cloud-client" in a for a in plain["spec"]["template"]["spec"]["containers"][0]["args"])


def test_the_gateway_serves_the_cameras_over_https_from_its_secret(helm: list[str]) -> None:
    objects = render(helm, "--set", "gateway.tls.enabled=true", "--set", "gateway.tls.secretName=gw-tls")
    (gateway_set,) = find(objects, "DaemonSet", "rel-edgeaigc-gateway")
    daemonset = gateway_set["spec"]["template"]
    container = daemonset["spec"]["containers"][0]
    assert {"--tls-cert=/etc/edgeaigc/gateway-tls/tls.crt", "--tls-key=/etc/edgeaigc/gateway-tls/tls.key"} <= set(
        container["args"]
    )
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert daemonset["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    assert next(v for v in daemonset["spec"]["volumes"] if v["name"] == "gateway-tls")["secret"]["secretName"] == (
        "gw-tls"
    )


def test_service_monitors_only_where_the_prometheus_operator_is(helm: list[str]) -> None:
    assert not find(render(helm), "ServiceMonitor")
    objects = render(helm, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    monitors = {m["metadata"]["name"]: m for m in find(objects, "ServiceMonitor")}
    assert set(monitors) == {"rel-edgeaigc-operator", "rel-edgeaigc-gateway", "rel-edgeaigc-cloud"}
    for monitor in monitors.values():
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in find(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    disabled = render(helm, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                      "--set", "metrics.serviceMonitor.enabled=false")  # fmt: skip
    assert not find(disabled, "ServiceMonitor")
    annotations = find(objects, "DaemonSet")[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8000"


def test_chart_files_are_the_repositorys_files_and_helm_packages_their_bytes(helm: list[str], tmp_path: Path) -> None:
    """crds/ and the actors exist once in the repository: the chart links to them."""
    linked = {
        **{CHART / "crds" / p.name: p for p in (REPO / "crds").glob("*.yaml")},
        **{CHART / "files" / "actors" / f"{a}.onnx": REPO / "policy" / "actors" / f"{a}.onnx"
           for a in SCHEMA["properties"]["policy"]["properties"]["actors"]["items"]["enum"]},
    }  # fmt: skip
    for link, source in linked.items():
        assert link.is_symlink() and link.resolve() == source.resolve(), link
    own = {p.name for p in (CHART / "crds").iterdir() if not p.is_symlink()}
    assert own == set()  # no kopf peering CRDs: leader election uses the built-in Lease
    run(helm, "package", str(CHART), "-d", str(tmp_path))
    (package,) = tmp_path.glob("edgeaigc-*.tgz")
    with tarfile.open(package) as archive:
        for link, source in linked.items():
            member = archive.extractfile(f"edgeaigc/{link.relative_to(CHART)}")
            assert member is not None and member.read() == source.read_bytes(), link
        assert not any(name.startswith("edgeaigc/ci/") for name in archive.getnames())
    # The rendered ConfigMap carries the actors byte for byte.
    (actors,) = find(
        render(helm, "--set", "policy.actors={traffic-city-td3,traffic-city-ddpg}"), "ConfigMap", "rel-edgeaigc-actors"
    )
    for key, data in actors["binaryData"].items():
        assert base64.b64decode(data) == (REPO / "policy" / "actors" / key).read_bytes()
    assert not find(render(helm, "--set-json", "policy.actors=[]"), "ConfigMap", "rel-edgeaigc-actors")


def test_the_helm_test_is_a_job_hook_probing_every_component(helm: list[str]) -> None:
    out = run(helm, "template", "rel", str(CHART), "-n", "city").stdout
    (job,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    arguments = job["spec"]["template"]["spec"]["containers"][0]["args"]
    # `python -c SCRIPT ARGS...` hands the script sys.argv[1:] == ARGS: every one must be a URL it checks.
    assert all(a.startswith("http://") for a in arguments[1:]), arguments[1:]
    assert [a for a in arguments if a.startswith("http://")] == [
        "http://rel-edgeaigc-operator.city.svc:8080/healthz",
        "http://rel-edgeaigc-operator.city.svc:8000/metrics",
        "http://rel-edgeaigc-gateway.city.svc:8000/v2/health/ready",
        "http://rel-edgeaigc-cloud.city.svc:8080/v2/health/ready",
    ]
    # With the operator scaled to 0, the test does not ask it.
    out = run(helm, "template", "rel", str(CHART), "-n", "city", "--set", "operator.replicas=0").stdout
    assert "rel-edgeaigc-operator.city.svc" not in out.split("kind: Job", 1)[1]


def _images(pod: dict[str, Any]) -> set[tuple[str, str]]:
    containers = pod.get("initContainers", []) + pod["containers"]
    return {(c["image"], c.get("imagePullPolicy", "")) for c in containers}


def test_real_node_values_put_every_pod_on_a_real_node_with_the_images_built_here(helm: list[str]) -> None:
    objects = render(helm, "-f", str(CHART / "ci" / "real-node-values.yaml"))
    pods = {name.split("/", 1)[1]: spec for name, spec in _pod_specs(objects)}
    assert {"rel-edgeaigc-operator", "rel-edgeaigc-gateway", "rel-edgeaigc-cloud", "rel-edgeaigc-test"} <= set(pods)
    for name, pod in pods.items():
        assert pod["nodeSelector"].get("edgeaigc.io/real") == "true", name
        for image, policy in _images(pod):
            assert image in ("localhost/edgeaigc/operator:local", "localhost/edgeaigc/inference:local"), image
            assert policy == "Never", (name, image)
    # The operator writes the same inference image into the Deployments it creates.
    operator = pods["rel-edgeaigc-operator"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator.get("env", [])}
    assert env["EDGEAIGC_INFERENCE_IMAGE"] == "localhost/edgeaigc/inference:local"


def test_make_kind_loads_the_images_the_kind_values_name() -> None:
    """`make kind` cannot run without Docker here; what it would run is checked instead."""
    commands = subprocess.run(
        ["make", "-n", "kind"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    values = yaml.safe_load((CHART / "ci" / "kind-values.yaml").read_text())
    image = values["image"]
    expected = {f"{image['operatorRepository']}:{image['tag']}", f"{image['inferenceRepository']}:{image['tag']}"}
    built = {line.split(" -t ")[1].split()[0] for line in commands if line.startswith("docker build")}
    loaded = next(line for line in commands if line.startswith("kind load docker-image"))
    assert built == expected and all(ref in loaded for ref in expected)
    assert image["pullPolicy"] == "Never"
    order = [next(i for i, line in enumerate(commands) if line.startswith(prefix)) for prefix in (
        "docker build", "kind get clusters", "kind load", "helm upgrade --install", "kubectl apply", "helm test"
    )]  # fmt: skip
    assert order == sorted(order)
    assert "kind-config.yaml" in commands[order[1]] and "ci/kind-values.yaml" in commands[order[3]]


# -- NetworkPolicies: the rendered policies evaluated as the NetworkPolicy API defines them ---------


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a pod (namespace and labels) or an address outside the cluster (no namespace)."""

    ip: str
    namespace: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _peer_matches(peer: dict[str, Any], other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        excepted = any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if other.namespace is None:  # selectors pick pods only
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector") or {}, other.labels)


def _rule_allows(rule: dict[str, Any], peers_key: str, other: Endpoint, port: int, protocol: str, ns: str) -> bool:
    ports = rule.get("ports") or []
    if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
        return False
    peers = rule.get(peers_key) or []
    return not peers or any(_peer_matches(peer, other, ns) for peer in peers)


def _direction_allows(
    policies: list[dict[str, Any]], pod: Endpoint, other: Endpoint, port: int, protocol: str, direction: str
) -> bool:
    """Whether ``pod``'s policies of ``direction`` (Ingress: ``other`` is the source) let the flow pass."""
    if pod.namespace is None:
        return True  # outside the cluster: no policy applies
    isolating = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and _selects(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    peers_key = "from" if direction == "Ingress" else "to"
    return any(
        _rule_allows(rule, peers_key, other, port, protocol, p["metadata"]["namespace"])
        for p in isolating
        for rule in p["spec"].get(direction.lower()) or []
    )


def allowed(
    policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    return _direction_allows(policies, source, target, port, protocol, "Egress") and _direction_allows(
        policies, target, source, port, protocol, "Ingress"
    )


def _release_pod(component: str, ip: str, namespace: str = "city") -> Endpoint:
    labels = {"app.kubernetes.io/name": "edgeaigc", "app.kubernetes.io/instance": "rel"}
    return Endpoint(ip, namespace, {**labels, "app.kubernetes.io/component": component, "helm.sh/chart": "x"})


def _model_pod(component: str, ip: str, namespace: str = "city") -> Endpoint:
    labels = {"app.kubernetes.io/managed-by": "edgeaigc", "edgeaigc.io/policy": "city"}
    return Endpoint(ip, namespace, {**labels, "app.kubernetes.io/component": component, "edgeaigc.io/model": "det"})


OPERATOR = _release_pod("operator", "10.244.0.2")
GATEWAY = _release_pod("gateway", "10.244.1.2")
CLOUD_SERVER = _release_pod("cloud-server", "10.244.0.3")
HELM_TEST = _release_pod("test", "10.244.1.3")
EDGE_MODEL = _model_pod("edge-inference", "10.244.1.4")
CLOUD_MODEL = _model_pod("cloud-inference", "10.244.0.4")
INTRUDER = Endpoint("10.244.1.9", "city", {"app": "something-else"})
PROMETHEUS = Endpoint("10.244.2.2", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Endpoint("10.244.2.3", "kube-system", {"k8s-app": "kube-dns"})
CAMERA = Endpoint("203.0.113.7")
API_SERVER = Endpoint("172.18.0.2")
ARTIFACT_SERVER = Endpoint("192.0.2.80")


def _policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return find(objects, "NetworkPolicy")


def test_network_policies_deny_every_release_pod_by_default(helm: list[str]) -> None:
    policies = _policies(render(helm))
    deny = find(policies, "NetworkPolicy", "rel-edgeaigc-default-deny")[0]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    for pod in (OPERATOR, GATEWAY, CLOUD_SERVER, HELM_TEST):
        assert _selects(deny["podSelector"], pod.labels)
    # Every pod of the system, the operator's model replicas too, is selected for both directions.
    for pod in (OPERATOR, GATEWAY, CLOUD_SERVER, HELM_TEST, EDGE_MODEL, CLOUD_MODEL):
        for direction in ("Ingress", "Egress"):
            assert any(
                _selects(p["spec"]["podSelector"], pod.labels) and direction in p["spec"]["policyTypes"]
                for p in policies
            ), (pod, direction)
    assert not any(_selects(p["spec"]["podSelector"], INTRUDER.labels) for p in policies)
    assert _policies(render(helm, "--set", "networkPolicy.enabled=false")) == []


# (source, target, port, protocol): the flows the system needs, read from the code (chart README, "NetworkPolicies").
NEEDED_FLOWS = [
    (CAMERA, GATEWAY, 8000, "TCP"),  # frames
    (GATEWAY, EDGE_MODEL, 8080, "TCP"),  # a hit
    (GATEWAY, CLOUD_MODEL, 8080, "TCP"),  # a miss, relayed
    (PROMETHEUS, GATEWAY, 8000, "TCP"),
    (PROMETHEUS, OPERATOR, 8000, "TCP"),
    (PROMETHEUS, CLOUD_SERVER, 8080, "TCP"),
    (PROMETHEUS, EDGE_MODEL, 8080, "TCP"),
    (OPERATOR, Endpoint(API_SERVER.ip), 6443, "TCP"),
    (OPERATOR, PROMETHEUS, 9090, "TCP"),
    (EDGE_MODEL, ARTIFACT_SERVER, 443, "TCP"),  # fetch-model
    (CLOUD_MODEL, ARTIFACT_SERVER, 80, "TCP"),
    (HELM_TEST, OPERATOR, 8080, "TCP"),
    (HELM_TEST, OPERATOR, 8000, "TCP"),
    (HELM_TEST, GATEWAY, 8000, "TCP"),
    (HELM_TEST, CLOUD_SERVER, 8080, "TCP"),
] + [
    (pod, KUBE_DNS, 53, protocol)
    for pod in (OPERATOR, GATEWAY, CLOUD_SERVER, HELM_TEST, EDGE_MODEL)
    for protocol in ("UDP", "TCP")
]

DENIED_FLOWS = [
    (INTRUDER, EDGE_MODEL, 8080, "TCP"),
    (INTRUDER, OPERATOR, 8000, "TCP"),
    (INTRUDER, CLOUD_SERVER, 8080, "TCP"),
    (CAMERA, EDGE_MODEL, 8080, "TCP"),
    (CAMERA, OPERATOR, 8080, "TCP"),
    (CAMERA, GATEWAY, 22, "TCP"),
    (GATEWAY, API_SERVER, 6443, "TCP"),  # no token, no API
    (GATEWAY, OPERATOR, 8000, "TCP"),
    # Misses go to the operator's cloud replicas (the routing table), not to the shared cloud server.
    (GATEWAY, CLOUD_SERVER, 8080, "TCP"),
    (EDGE_MODEL, API_SERVER, 6443, "TCP"),
    (EDGE_MODEL, PROMETHEUS, 9090, "TCP"),
    (EDGE_MODEL, OPERATOR, 8080, "TCP"),
    (EDGE_MODEL, ARTIFACT_SERVER, 22, "TCP"),
    (EDGE_MODEL, GATEWAY, 8000, "TCP"),
    (OPERATOR, EDGE_MODEL, 8080, "TCP"),
    (HELM_TEST, EDGE_MODEL, 8080, "TCP"),
    (HELM_TEST, API_SERVER, 6443, "TCP"),
    (CLOUD_SERVER, ARTIFACT_SERVER, 443, "TCP"),  # no cloudInference.models: nothing to fetch
    (OPERATOR, ARTIFACT_SERVER, 22, "TCP"),
]


@pytest.mark.parametrize(("source", "target", "port", "protocol"), NEEDED_FLOWS)
def test_network_policies_allow_the_flows_the_system_needs(
    default_policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int, protocol: str
) -> None:
    assert allowed(default_policies, source, target, port, protocol)


@pytest.mark.parametrize(("source", "target", "port", "protocol"), DENIED_FLOWS)
def test_network_policies_deny_every_other_flow(
    default_policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int, protocol: str
) -> None:
    assert not allowed(default_policies, source, target, port, protocol)


@pytest.fixture(scope="module")
def default_policies(helm: list[str]) -> list[dict[str, Any]]:
    return _policies(render(helm))


def test_network_policy_sources_and_destinations_come_from_the_values(helm: list[str]) -> None:
    model = '{"name":"det","url":"https://models.example/det.onnx","sha256":"' + "0" * 64 + '","maxBytes":4000000}'
    cameras = '[{"ipBlock":{"cidr":"203.0.113.0/28"}}]'
    policies = _policies(
        render(
            helm,
            "--set-json", f"networkPolicy.cameraSources={cameras}",
            "--set-json", f"cloudInference.models=[{model}]",
            "--set-json", 'networkPolicy.apiServer={"peers":[{"ipBlock":{"cidr":"172.18.0.2/32"}}],"ports":[6443]}',
            "--set", "operator.watchNamespaces={city,depot}",
        )
    )  # fmt: skip
    assert allowed(policies, CAMERA, GATEWAY, 8000)
    assert not allowed(policies, Endpoint("198.51.100.1"), GATEWAY, 8000)
    assert allowed(policies, OPERATOR, API_SERVER, 6443) and not allowed(
        policies, OPERATOR, Endpoint("172.18.0.3"), 6443
    )
    assert allowed(policies, CLOUD_SERVER, ARTIFACT_SERVER, 443)  # its fetch-model init containers
    # Model replicas in every watched namespace are guarded, and reached by the release's gateways.
    depot_model = _model_pod("edge-inference", "10.244.1.20", namespace="depot")
    assert find(policies, "NetworkPolicy", "rel-edgeaigc-models") and {
        p["metadata"]["namespace"] for p in find(policies, "NetworkPolicy", "rel-edgeaigc-models")
    } == {"city", "depot"}
    assert allowed(policies, GATEWAY, depot_model, 8080)
    assert not allowed(policies, Endpoint("10.244.1.21", "depot", {}), depot_model, 8080)
    assert not allowed(policies, _release_pod("gateway", "10.244.3.2", namespace="elsewhere"), depot_model, 8080)


def test_real_node_values_allow_the_local_clusters_host_services_only(helm: list[str]) -> None:
    policies = _policies(render(helm, "-f", str(CHART / "ci" / "real-node-values.yaml")))
    host, pods = "198.18.128.1", "198.18.1."
    model = _model_pod("edge-inference", pods + "20")
    operator = _release_pod("operator", pods + "2")
    assert allowed(policies, model, Endpoint(host), 8088)  # the example's artifact server
    assert allowed(policies, model, Endpoint(host), 53, "UDP")  # CoreDNS
    assert not allowed(policies, model, Endpoint(host), 9090)  # Prometheus is not the model's business
    assert allowed(policies, operator, Endpoint(host), 39017)  # the API server's port is chosen at `cluster up`
    assert allowed(policies, operator, Endpoint(host), 9090)
    assert not allowed(policies, operator, Endpoint("198.18.128.10"), 10250)  # not the kubelet
    assert allowed(policies, Endpoint(host), model, 8080)  # Prometheus scrapes
    assert not allowed(policies, Endpoint(pods + "30", "edge-real", {}), model, 8080)


def test_every_container_has_a_cpu_limit_and_the_operator_a_readiness_probe(helm: list[str]) -> None:
    model = '{"name":"det","url":"https://models.example/det.onnx","sha256":"' + "0" * 64 + '","maxBytes":4000000}'
    for values in ([], ["-f", str(CHART / "ci" / "real-node-values.yaml")]):
        for name, spec in _pod_specs(render(helm, "--set-json", f"cloudInference.models=[{model}]", *values)):
            for container in spec["containers"] + spec.get("initContainers", []):
                limits = container["resources"]["limits"]
                assert "cpu" in limits and "memory" in limits, (name, container["name"])
    operator = find(render(helm), "Deployment", "rel-edgeaigc-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert operator["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_recording_rules_ship_as_a_configmap_and_a_prometheus_rule_and_pass_promtool(
    helm: list[str], tmp_path: Path
) -> None:
    """The rules the operator's queries read: one file, valid for Prometheus, in both forms the chart offers."""
    from edgeaigc.inference.metrics_contract import RECORDED_REQUESTS_TOTAL

    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert [rule["record"] for group in shipped["groups"] for rule in group["rules"]] == [RECORDED_REQUESTS_TOTAL]
    assert not find(render(helm), "PrometheusRule")
    objects = render(helm, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                     "--set", "metrics.prometheusRule.labels.release=kube-prometheus")  # fmt: skip
    (rule,) = find(objects, "PrometheusRule")
    assert rule["spec"] == shipped and rule["metadata"]["labels"]["release"] == "kube-prometheus"
    (config_map,) = find(objects, "ConfigMap", "rel-edgeaigc-prometheus-rules")
    rules_file = tmp_path / "edgeaigc-rules.yaml"
    rules_file.write_text(config_map["data"]["edgeaigc-rules.yaml"])
    assert yaml.safe_load(rules_file.read_text()) == shipped
    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    off = render(helm, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                 "--set", "metrics.prometheusRule.enabled=false",
                 "--set", "metrics.rulesConfigMap.enabled=false")  # fmt: skip
    assert not find(off, "PrometheusRule") and not find(off, "ConfigMap", "rel-edgeaigc-prometheus-rules")


def test_recording_mounts_a_volume_and_passes_the_flags(helm: list[str]) -> None:
    def operator(*values: str) -> dict[str, Any]:
        (deployment,) = find(render(helm, *values), "Deployment", "rel-edgeaigc-operator")
        return dict(deployment["spec"]["template"]["spec"])

    off = operator()
    assert not any(a.startswith("--record-dir") for a in off["containers"][0]["args"])
    assert [v["name"] for v in off["volumes"]] == ["tmp"]
    on = operator("--set", "operator.recording.enabled=true,operator.recording.maxMB=32")
    args = on["containers"][0]["args"]
    assert "--record-dir=/var/lib/edgeaigc/recording" in args and "--record-max-mb=32" in args
    (volume,) = [v for v in on["volumes"] if v["name"] == "recording"]
    assert volume["emptyDir"]["sizeLimit"] == "48Mi"
    assert {"name": "recording", "mountPath": "/var/lib/edgeaigc/recording"} in on["containers"][0]["volumeMounts"]
    claimed = operator("--set", "operator.recording.enabled=true,operator.recording.persistentVolumeClaim=rec")
    (volume,) = [v for v in claimed["volumes"] if v["name"] == "recording"]
    assert volume["persistentVolumeClaim"] == {"claimName": "rec"}
