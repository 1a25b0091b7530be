"""The ``ArtifactReady`` condition of InferenceModels from their pods, as the API server reports them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client import ApiClient

from edgeaigc.operator import builders
from edgeaigc.operator import constants as c
from edgeaigc.operator.artifacts import ArtifactCondition, artifact_conditions

POLICY = {"metadata": {"name": "city", "namespace": "traffic-city", "uid": "u-1"}}
SHA = "ab" * 32
GOT = "cd" * 32
URL = "https://models.example/det.onnx"
STARTED = "2026-03-01T10:00:00Z"


def pod(model: str, node: str, artifact: dict[str, Any] | None, status: dict[str, Any]) -> dict[str, Any]:
    """A pod of the Deployment the operator builds for ``model``, on ``node``, with ``status``."""
    if node.startswith("cloud"):
        deployment = builders.build_cloud_deployment(POLICY, model, "img", artifact, model_size_mib=4)
    else:
        deployment = builders.build_edge_deployment(POLICY, model, node, node, 500, 128, "img", artifact, 4)
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": f"{deployment['metadata']['name']}-7d9f-x2k4q"},
        "spec": {**template["spec"], "nodeName": node},
        "status": status,
    }


def init_status(state: dict[str, Any], last_state: dict[str, Any] | None = None, restarts: int = 0) -> dict[str, Any]:
    return {
        "name": builders.FETCH_CONTAINER,
        "image": "img",
        "imageID": "",
        "ready": False,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
        "lastState": last_state or {},
    }


def terminated(code: int, message: str | None = None, reason: str = "Error") -> dict[str, Any]:
    state = {"exitCode": code, "reason": reason, "startedAt": STARTED, "finishedAt": STARTED, "containerID": "c://1"}
    if message is not None:
        state["message"] = message
    return {"terminated": state}


def initializing(init: dict[str, Any]) -> dict[str, Any]:
    """A pod whose init container has not completed (Pending, ``Init:...``)."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "False"}],
        "initContainerStatuses": [init],
        "containerStatuses": [
            {
                "name": "inference",
                "image": "img",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
        ],
    }


RUNNING = {
    "phase": "Running",
    "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
    "initContainerStatuses": [init_status(terminated(0, reason="Completed"))],
    "containerStatuses": [
        {"name": "inference", "image": "img", "imageID": "", "ready": True, "restartCount": 0, "state": {"running": {}}}
    ],
}
MISMATCH = f"{URL}: expected sha256 {SHA}, got {GOT} (3879936 bytes)"
ARTIFACT = {"url": URL, "sha256": SHA}


def test_every_pod_with_its_file_is_true_with_the_nodes() -> None:
    pods = [pod("det", "pi-0", ARTIFACT, RUNNING), pod("det", "cloud-0", ARTIFACT, RUNNING)]
    assert artifact_conditions(pods) == {"det": ArtifactCondition("True", "Fetched", "fetched on cloud-0, pi-0")}


def test_a_checksum_mismatch_names_the_node_and_the_digests() -> None:
    failed = initializing(init_status(terminated(3, MISMATCH)))
    conditions = artifact_conditions([pod("det", "pi-0", ARTIFACT, failed), pod("det", "cloud-0", ARTIFACT, RUNNING)])
    assert conditions["det"] == ArtifactCondition("False", "ChecksumMismatch", f"pi-0: {MISMATCH}")
    assert conditions["det"].as_dict()["type"] == "ArtifactReady"


def test_a_failure_being_retried_is_still_reported() -> None:
    message = f"{URL}: ConnectError: [Errno 111] Connection refused (after 4 attempts)"
    back_off = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
    waiting = initializing(init_status(back_off, terminated(4, message), restarts=3))
    running_again = initializing(init_status({"running": {"startedAt": STARTED}}, terminated(5, "too big"), 4))
    conditions = artifact_conditions(
        [pod("det", "pi-0", ARTIFACT, waiting), pod("cls", "pi-1", {"url": URL, "sha256": SHA}, running_again)]
    )
    assert conditions["det"] == ArtifactCondition("False", "SourceUnreachable", f"pi-0: {message} (retrying)")
    assert conditions["cls"] == ArtifactCondition("False", "OverBudget", "pi-1: too big (retrying)")


def test_one_models_failure_does_not_touch_another() -> None:
    pods = [
        pod("det", "pi-0", ARTIFACT, initializing(init_status(terminated(3, MISMATCH)))),
        pod("cls", "pi-0", {"image": "reg/cls:1"}, RUNNING),
        pod("flow", "pi-0", None, RUNNING),  # no artifact: the model is in the image, nothing to report
    ]
    conditions = artifact_conditions(pods)
    assert set(conditions) == {"det", "cls"}
    assert conditions["cls"].status == "True"


def test_a_download_in_progress_is_fetching() -> None:
    pods = [
        pod("det", "pi-0", ARTIFACT, initializing(init_status({"running": {"startedAt": STARTED}}))),
        pod("det", "cloud-0", ARTIFACT, RUNNING),
    ]
    assert artifact_conditions(pods)["det"] == ArtifactCondition("False", "Fetching", "pi-0: fetching")


def test_the_worst_failure_names_the_condition_and_every_node_is_listed() -> None:
    pods = [
        pod("det", "pi-0", ARTIFACT, initializing(init_status(terminated(4, "unreachable")))),
        pod("det", "pi-1", ARTIFACT, initializing(init_status({"running": {}}))),
        pod("det", "cloud-0", ARTIFACT, initializing(init_status(terminated(3, "mismatch")))),
    ]
    assert artifact_conditions(pods)["det"] == ArtifactCondition(
        "False", "ChecksumMismatch", "cloud-0: mismatch; pi-0: unreachable"
    )


def test_killed_without_a_message_is_a_fetch_failure_with_the_kubelets_reason() -> None:
    oom = initializing(init_status({"waiting": {"reason": "CrashLoopBackOff"}}, terminated(137, reason="OOMKilled")))
    assert artifact_conditions([pod("det", "pi-0", ARTIFACT, oom)])["det"] == ArtifactCondition(
        "False", "FetchFailed", "pi-0: exit code 137 (OOMKilled) (retrying)"
    )


def test_an_unpullable_artifact_image_is_an_unreachable_source() -> None:
    image = {"image": "registry.example/models/cls:1"}
    pull = 'failed to pull and unpack image "registry.example/models/cls:1": 404 Not Found'
    waiting = initializing(init_status({"waiting": {"reason": "ImagePullBackOff", "message": pull}}))
    condition = artifact_conditions([pod("cls", "pi-2", image, waiting)])["cls"]
    assert (condition.reason, condition.message) == ("SourceUnreachable", f"pi-2: ImagePullBackOff: {pull}")
    # The inference image itself failing to pull is not the artifact's source.
    other = initializing(init_status({"waiting": {"reason": "ErrImagePull", "message": 'pulling "img": denied'}}))
    assert artifact_conditions([pod("cls", "pi-2", image, other)])["cls"].reason == "FetchFailed"


def test_a_missing_claim_is_an_unreachable_source() -> None:
    claim = {"persistentVolumeClaim": {"claimName": "models", "path": "det.onnx"}}
    message = '0/6 nodes are available: persistentvolumeclaim "models" not found. preemption: 0/6 nodes are available'
    unschedulable = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}],
    }
    pending = pod("det", "pi-0", claim, unschedulable)
    del pending["spec"]["nodeName"]
    assert artifact_conditions([pending])["det"] == ArtifactCondition(
        "False", "SourceUnreachable", f"unscheduled: pod not scheduled: {message}"
    )


def test_eviction_for_the_models_volume_is_over_budget() -> None:
    evicted = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": 'Usage of EmptyDir volume "models" exceeds the limit "5Mi". ',
        "initContainerStatuses": [init_status(terminated(0, reason="Completed"))],
    }
    condition = artifact_conditions([pod("det", "pi-0", ARTIFACT, evicted)])["det"]
    assert (condition.status, condition.reason) == ("False", "OverBudget")
    assert condition.message == 'pi-0: evicted: Usage of EmptyDir volume "models" exceeds the limit "5Mi".'


def test_a_terminating_pod_is_ignored() -> None:
    old = pod("det", "pi-0", ARTIFACT, initializing(init_status(terminated(3, MISMATCH))))
    old["metadata"]["deletionTimestamp"] = STARTED
    assert artifact_conditions([old, pod("det", "pi-1", ARTIFACT, RUNNING)])["det"].status == "True"


@pytest.mark.parametrize("form", ["client-object", "snake-case-dict"])
def test_kubernetes_client_pods_are_read_too(form: str) -> None:
    failed = pod("det", "pi-0", ARTIFACT, initializing(init_status(terminated(3, MISMATCH))))
    fine = pod("cls", "pi-0", {"image": "reg/cls:1"}, RUNNING)
    # What CoreV1Api.list_namespaced_pod returns: V1Pod objects (snake_case through to_dict()).
    objects = [ApiClient().deserialize(json.dumps(p), "V1Pod", "application/json") for p in (failed, fine)]
    pods = objects if form == "client-object" else [o.to_dict() for o in objects]
    assert artifact_conditions(pods) == {
        "det": ArtifactCondition("False", "ChecksumMismatch", f"pi-0: {MISMATCH}"),
        "cls": ArtifactCondition("True", "Fetched", "fetched on pi-0"),
    }
    assert c.LABEL_MODEL in objects[0].metadata.labels
