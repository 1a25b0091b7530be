"""Whether each model's file reached its pods: the ``ArtifactReady`` condition of an InferenceModel (pure).

The ``fetch-model`` init container of a model pod (see :mod:`edgeaigc.operator.builders`) exits
with a status that names the failure and writes one line saying why as its termination message
(:mod:`edgeaigc.inference.delivery.exit_codes`). From the pods as the API lists them,
:func:`artifact_conditions` derives per model:

* ``True`` / ``Fetched``: every pod of the model has its file;
* ``False`` / ``ChecksumMismatch``, ``SourceUnreachable``, ``OverBudget`` or ``FetchFailed``
  (anything else, e.g. the container was killed): a pod failed, also when it is retrying now
  (``CrashLoopBackOff``, or running again after a failure); the message names the node and why;
* ``False`` / ``Fetching``: no failure, but a pod does not have its file yet.

A failure is reported on that model only: other models' pods are separate and unaffected.
Models whose pods have no fetch-model container (no ``spec.artifact``) are not in the result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeaigc.inference.delivery.exit_codes import REASONS, ExitCode
from edgeaigc.operator import constants as c
from edgeaigc.operator.builders import ARTIFACT_VOLUME, FETCH_CONTAINER

ARTIFACT_READY = "ArtifactReady"
FETCHED = "Fetched"
FETCHING = "Fetching"
FETCH_FAILED = REASONS[ExitCode.FAILED]
CHECKSUM_MISMATCH = REASONS[ExitCode.CHECKSUM_MISMATCH]
SOURCE_UNREACHABLE = REASONS[ExitCode.SOURCE_UNREACHABLE]
OVER_BUDGET = REASONS[ExitCode.OVER_BUDGET]
#: Which failure names the condition when pods of one model fail differently (most specific first).
FAILURE_ORDER = (CHECKSUM_MISMATCH, OVER_BUDGET, SOURCE_UNREACHABLE, FETCH_FAILED)
#: Waiting reasons of a container whose image (or image volume) cannot be pulled.
IMAGE_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class ArtifactCondition:
    """The ``ArtifactReady`` condition of one InferenceModel (``lastTransitionTime`` is the writer's)."""

    status: str
    reason: str
    message: str
    type: str = ARTIFACT_READY

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class _PodArtifact:
    model: str
    where: str
    reason: str
    message: str


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` for API JSON (camelCase) or a client model's ``to_dict()`` (snake_case); None if absent."""
    if not isinstance(obj, Mapping):
        return None
    if key in obj:
        return obj[key]
    return obj.get(_CAMEL.sub("_", key).lower())


def _as_dict(pod: Any) -> Any:
    """A pod as a mapping: API JSON as is, a kubernetes client ``V1Pod`` through ``to_dict()``."""
    return pod if isinstance(pod, Mapping) else pod.to_dict()


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())


def _failure(terminated: Any) -> tuple[str, str] | None:
    """(reason, message) of a terminated fetch-model run, None when it succeeded."""
    code = _get(terminated, "exitCode")
    if code == 0:
        return None
    reason = REASONS.get(code, FETCH_FAILED) if isinstance(code, int) else FETCH_FAILED
    # No message: killed before writing one (e.g. OOMKilled, the kubelet's reason).
    killed = _get(terminated, "reason") or "no reason"
    message = _one_line(_get(terminated, "message")) or f"exit code {code} ({killed})"
    return reason, message


def _pod_artifact(pod: Any) -> _PodArtifact | None:
    """What one pod says about its model's file (None: not a model pod with a fetch-model container)."""
    pod = _as_dict(pod)
    metadata, spec, status = _get(pod, "metadata") or {}, _get(pod, "spec") or {}, _get(pod, "status") or {}
    model = (_get(metadata, "labels") or {}).get(c.LABEL_MODEL)
    init_names = [_get(k, "name") for k in _get(spec, "initContainers") or []]
    if model is None or FETCH_CONTAINER not in init_names or _get(metadata, "deletionTimestamp"):
        return None
    where = _get(spec, "nodeName") or "unscheduled"

    def result(reason: str, message: str) -> _PodArtifact:
        return _PodArtifact(model, where, reason, message)

    if _get(status, "phase") == "Failed" and _get(status, "reason") == "Evicted":
        # The kubelet evicts a pod whose models volume or ephemeral storage outgrew its limit.
        message = _one_line(_get(status, "message"))
        storage = "ephemeral" in message.lower() or "emptydir" in message.lower()
        return result(OVER_BUDGET if storage else FETCH_FAILED, f"evicted: {message}")
    fetch = next((k for k in _get(status, "initContainerStatuses") or [] if _get(k, "name") == FETCH_CONTAINER), None)
    if fetch is None:
        message = _not_started(status)
        return result(SOURCE_UNREACHABLE if _claim_missing(spec, message) else FETCHING, message)
    state, last = _get(fetch, "state") or {}, _get(fetch, "lastState") or {}
    if _get(state, "terminated") is not None:
        failure = _failure(_get(state, "terminated"))
        return result(*failure) if failure else result(FETCHED, "")
    waiting = _get(state, "waiting")
    if waiting is not None and _get(waiting, "reason") in IMAGE_PULL_FAILURES:
        message = _one_line(_get(waiting, "message")) or _get(waiting, "reason")
        artifact_images = [_get(_get(v, "image"), "reference") for v in _get(spec, "volumes") or []]
        from_artifact = any(image and image in message for image in artifact_images)
        return result(SOURCE_UNREACHABLE if from_artifact else FETCH_FAILED, f"{_get(waiting, 'reason')}: {message}")
    # Waiting to restart (CrashLoopBackOff) or running again: the last failure is what to report.
    previous = _failure(_get(last, "terminated")) if _get(last, "terminated") is not None else None
    if previous is not None:
        return result(previous[0], f"{previous[1]} (retrying)")
    if waiting is not None:
        detail = _one_line(_get(waiting, "message"))
        return result(FETCHING, f"{_get(waiting, 'reason')}" + (f": {detail}" if detail else ""))
    return result(FETCHING, "fetching")


def _not_started(status: Any) -> str:
    """Why a pod's fetch-model container has no status yet."""
    scheduled = next((k for k in _get(status, "conditions") or [] if _get(k, "type") == "PodScheduled"), None)
    if scheduled is None or _get(scheduled, "status") == "True":
        return "pod starting"
    return f"pod not scheduled: {_one_line(_get(scheduled, 'message'))}"


def _claim_missing(spec: Any, message: str) -> bool:
    """Whether the pod cannot be scheduled because the artifact's claim does not exist."""
    for volume in _get(spec, "volumes") or []:
        claim = _get(_get(volume, "persistentVolumeClaim"), "claimName")
        missing = f'persistentvolumeclaim "{claim}" not found'
        if _get(volume, "name") == ARTIFACT_VOLUME and claim and missing in message:
            return True
    return False


def artifact_conditions(pods: Iterable[Any]) -> dict[str, ArtifactCondition]:
    """InferenceModel name -> its ``ArtifactReady`` condition, from the pods of the operator.

    Args:
        pods: the model pods (edge and cloud) as listed by the API: JSON mappings (dynamic client,
            kubectl) or kubernetes client ``V1Pod`` objects (``CoreV1Api.list_namespaced_pod``).
    """
    by_model: dict[str, list[_PodArtifact]] = {}
    for pod in pods:
        found = _pod_artifact(pod)
        if found is not None:
            by_model.setdefault(found.model, []).append(found)
    conditions = {}
    for model, of_model in sorted(by_model.items()):
        of_model.sort(key=lambda p: p.where)
        failed = [p for p in of_model if p.reason in FAILURE_ORDER]
        if failed:
            reason = min((p.reason for p in failed), key=FAILURE_ORDER.index)
            message = "; ".join(f"{p.where}: {p.message}" for p in failed)
            conditions[model] = ArtifactCondition("False", reason, message)
        elif any(p.reason == FETCHING for p in of_model):
            waiting = [p for p in of_model if p.reason == FETCHING]
            message = "; ".join(f"{p.where}: {p.message}" for p in waiting)
            conditions[model] = ArtifactCondition("False", FETCHING, message)
        else:
            conditions[model] = ArtifactCondition("True", FETCHED, "fetched on " + ", ".join(p.where for p in of_model))
    return conditions
