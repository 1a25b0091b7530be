"""Learning from the live loop: record every applied decision, promote a candidate actor only if it is better.

With ``edgeaigc operator --record-dir DIR`` each PlacementPolicy's decisions are recorded to
``DIR/<namespace>/<policy>/`` (:mod:`edgeaigc.policy.recording`). A fine-tuned actor
(``edgeaigc train --from-recording``) is offered by putting it into the policy's actor ConfigMap
under the key :data:`~edgeaigc.operator.constants.CANDIDATE_KEY`. At its next interval the operator
replays both the current actor and the candidate over the recorded demand
(:func:`edgeaigc.policy.replay.replay`, the guard's counterfactual scoring) and

- promotes the candidate (it replaces the actor key; the candidate key is removed) when its mean
  objective is lower than the current actor's by more than ``promotion_margin`` (relative);
- refuses it otherwise (the candidate key is removed; the actor stays);
- waits while fewer than ``min_intervals`` intervals are recorded.

Either way the PlacementPolicy's status says so (condition ``ActorPromotion``, ``status.learning``
with both scores) and an event is posted. Recording and judging never fail a decision: an error is
logged and counted (``edgeaigc_operator_recording_errors_total``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from edgeaigc.operator import constants as c
from edgeaigc.policy.actor_runner import ActorLoadError, OnnxActorPolicy
from edgeaigc.policy.guard import better_by
from edgeaigc.policy.recording import Recorder, RecordingError, load_recording, recording_files
from edgeaigc.policy.replay import Replay, replay

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LearningSettings:
    """The operator's ``--record-*`` and ``--promotion-*`` flags."""

    record_dir: Path
    chunk_intervals: int = 60
    max_files: int = 100
    max_bytes: int = 64 << 20
    promotion_margin: float = 0.02
    """Relative objective gap by which a candidate must beat the current actor."""
    min_intervals: int = 10
    """Recorded intervals a promotion needs before it is judged."""
    max_replay_intervals: int = 240
    """The most recent intervals a promotion replays: it runs in the decision loop, after a decision,
    and takes about 0.1 s per interval for the two actors on traffic-city at a load of 6 (e2e)."""

    def directory(self, namespace: str, name: str) -> Path:
        return self.record_dir / namespace / name


@dataclasses.dataclass(frozen=True)
class Promotion:
    """The judgement of one candidate actor."""

    outcome: str
    """``Promoted``, ``NotBetter``, ``InvalidCandidate``, ``CollectingRecording`` or ``Failed``."""
    message: str
    candidate_digest: str
    candidate: Replay | None = None
    current: Replay | None = None
    margin: float = 0.0
    seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.outcome == "Promoted"

    @property
    def final(self) -> bool:
        """Whether the candidate was consumed (promoted or refused), not left to judge again."""
        return self.outcome in ("Promoted", "NotBetter", "InvalidCandidate")


def judge(candidate: Replay, current: Replay, margin: float, digest: str) -> Promotion:
    """Promote only a candidate whose mean objective beats the current actor's by more than ``margin`` (pure)."""
    figures = (
        f"counterfactual objective on the last {candidate.intervals} recorded intervals (lower is better): "
        f"candidate {candidate.mean_objective:.5g} (hit rate {candidate.hit_rate:.1%}), "
        f"current {current.mean_objective:.5g} (hit rate {current.hit_rate:.1%}), margin {margin:.0%}"
    )
    if math.isfinite(candidate.mean_objective) and better_by(candidate.mean_objective, current.mean_objective, margin):
        return Promotion("Promoted", f"candidate {digest} promoted: {figures}", digest, candidate, current, margin)
    message = f"candidate {digest} refused, not better: {figures}"
    return Promotion("NotBetter", message, digest, candidate, current, margin)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


class Learner:
    """Recording and promotion for one PlacementPolicy (kept by its decision loop)."""

    def __init__(self, settings: LearningSettings, namespace: str, name: str) -> None:
        self.settings = settings
        self.directory = settings.directory(namespace, name)
        self.recorder = Recorder(self.directory, settings.chunk_intervals, settings.max_files, settings.max_bytes)

    def judge_candidate(
        self, core: CoreV1Api, namespace: str, spec: Mapping[str, Any], write_allowed: Any
    ) -> Promotion | None:
        """Judge the candidate in ``spec.actor``'s ConfigMap, if there is one, and carry out the verdict.

        Args:
            write_allowed: a context manager factory yielding whether this replica may write (the fence).

        Returns None when there is no candidate (or no actor ConfigMap).
        """
        actor = spec.get("actor")
        if not actor:
            return None
        name, key = actor["configMapName"], actor["key"]
        try:
            config_map = core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        binary = {key: str(value) for key, value in (config_map.binary_data or {}).items()}
        if c.CANDIDATE_KEY not in binary:
            return None
        started = time.perf_counter()
        candidate_bytes = base64.b64decode(binary[c.CANDIDATE_KEY])
        digest = _digest(candidate_bytes)
        promotion = self._verdict(spec, binary.get(key), candidate_bytes, digest)
        promotion = dataclasses.replace(promotion, seconds=time.perf_counter() - started)
        if promotion.final:
            patch: dict[str, Any] = {
                # Optimistic concurrency: a ConfigMap changed meanwhile is judged again next interval.
                "metadata": {"resourceVersion": config_map.metadata.resource_version if config_map.metadata else None},
                "binaryData": {c.CANDIDATE_KEY: None},
            }
            if promotion.promoted:
                patch["binaryData"][key] = binary[c.CANDIDATE_KEY]
            with write_allowed() as leading:
                if not leading:
                    return None
                core.patch_namespaced_config_map(name, namespace, patch)
        return promotion

    def _verdict(self, spec: Mapping[str, Any], current_b64: str | None, candidate: bytes, digest: str) -> Promotion:
        settings = self.settings
        self.recorder.flush()  # what is recorded so far, on disk for the replay
        try:
            candidate_policy = OnnxActorPolicy(candidate, spec["algorithm"], source=f"candidate {digest}")
        except ActorLoadError as error:
            return Promotion("InvalidCandidate", f"candidate {digest} refused: {error.reason}", digest)
        if current_b64 is None:
            return Promotion("Failed", f"the ConfigMap has no current actor under {spec['actor']['key']!r}", digest)
        if not recording_files(self.directory):
            message = f"candidate {digest} waits: nothing recorded yet in {self.directory}"
            return Promotion("CollectingRecording", message, digest)
        try:
            recording = load_recording(self.directory, newest_fleet_only=True)
            current_policy = OnnxActorPolicy(base64.b64decode(current_b64), spec["algorithm"], source="current actor")
        except (RecordingError, ActorLoadError) as error:
            return Promotion("Failed", f"candidate {digest} not judged: {error}", digest)
        if len(recording) < settings.min_intervals:
            message = f"candidate {digest} waits: {len(recording)} of {settings.min_intervals} intervals recorded"
            return Promotion("CollectingRecording", message, digest)
        last = settings.max_replay_intervals
        return judge(
            replay(recording, candidate_policy, last=last),
            replay(recording, current_policy, last=last),
            settings.promotion_margin,
            digest,
        )
