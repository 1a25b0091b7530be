"""Learning from the live loop without a cluster: recording decisions, replaying policies on them, promotion."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeaigc.operator import constants as c
from edgeaigc.operator.decide import Decision, PolicyCache, decide
from edgeaigc.operator.learning import Learner, LearningSettings, judge
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.recording import Recorder, RecordingError, load_recording, recording_files
from edgeaigc.policy.registry import make_policy
from edgeaigc.policy.replay import Replay, recorded_objective, replay
from edgeaigc.policy.system_model import evaluate_slot
from tests.unit.test_operator_decide import _policy_with, _samples, snapshot

RATES = (2.0, 3.0, 1.0, 4.0, 2.5, 0.5, 3.5, 2.0, 1.5, 3.0, 2.0, 4.5, 1.0)


def decisions(
    policy: dict[str, Any] | None = None, rates: tuple[float, ...] = RATES, churn_limit: int | None = None
) -> list[Decision]:
    """Applied LRU decisions on changing demand, each applied before the next (its objects owned)."""
    if churn_limit is not None:
        policy = _policy_with(churnLimit=churn_limit)
    policies, made = PolicyCache(), []
    owned: dict[tuple[str, str], dict[str, Any]] = {}
    for rate in rates:
        decision, changes = decide(
            snapshot(policy=policy or _policy_with(), owned=list(owned.values()), samples=_samples(rate)), policies
        )
        assert decision.degraded_reason is None and changes is not None and decision.trace is not None
        owned.update({(m["kind"], m["metadata"]["name"]): m for m in changes.apply})
        for _, kind, name in changes.delete:
            owned.pop((kind, name), None)
        made.append(decision)
    return made


def record(directory: Path, made: list[Decision], start: float = 1_800_000_000, **bounds: int) -> Recorder:
    recorder = Recorder(directory, **bounds)
    for second, decision in enumerate(made):
        assert decision.fleet is not None and decision.trace is not None
        recorder.record(decision.fleet, decision.trace, now=start + 30 * second)
    return recorder


def test_transitions_join_consecutive_decisions_and_score_each_plan_on_the_next_demand(tmp_path: Path) -> None:
    made = decisions()
    recorder = record(tmp_path, made, chunk_intervals=4)
    # 13 decisions -> 12 transitions: 3 files of 4, none left half-written.
    assert recorder.transitions == len(made) - 1 and len(recording_files(tmp_path)) == 3
    assert not list(tmp_path.glob(".writing-*"))
    recording = load_recording(tmp_path)
    assert len(recording) == 12
    scenario = recording.scenario
    E, M, U = scenario.num_nodes, scenario.num_models, scenario.num_cameras
    assert recording.arrays["camera_rates"].shape == (12, U, M) and recording.arrays["cache"].dtype == np.uint8
    assert recording.arrays["action"].shape == (12, 2 * E * M + U)
    assert list(recording.arrays["in_control"]) == ["lru"] * 12
    for index in (0, 5, 11):
        before, after = made[index].trace, made[index + 1].trace
        assert before is not None and after is not None
        np.testing.assert_allclose(recording.arrays["camera_rates"][index], before.observation.camera_rates, rtol=1e-6)
        np.testing.assert_allclose(
            recording.arrays["next_camera_rates"][index], after.observation.camera_rates, rtol=1e-6
        )
        expected = evaluate_slot(
            scenario,
            before.plan,
            after.observation.camera_rates,
            after.observation.link_quality,
            before.observation.cache,
        )
        assert recording.arrays["reward"][index] == pytest.approx(expected.reward, rel=1e-5)
    # The recorded cache after a decision is the next observation's cache (the plan was applied).
    np.testing.assert_array_equal(recording.arrays["plan_cache"][:-1], recording.arrays["next_cache"][:-1])


def test_the_recording_is_bounded_by_files_and_bytes_oldest_first(tmp_path: Path) -> None:
    made = decisions()
    record(tmp_path / "files", made, chunk_intervals=2, max_files=2)
    kept = recording_files(tmp_path / "files")
    assert len(kept) == 2 and len(load_recording(tmp_path / "files")) == 4
    # The newest two files (the last four transitions) are the ones kept.
    assert load_recording(tmp_path / "files").arrays["time"][0] == 1_800_000_000 + 30 * 8
    record(tmp_path / "bytes", made, chunk_intervals=2, max_bytes=1)
    assert len(recording_files(tmp_path / "bytes")) == 1  # never below one file


def test_an_interval_without_an_applied_decision_breaks_the_transition(tmp_path: Path) -> None:
    made = decisions()
    recorder = Recorder(tmp_path, chunk_intervals=100)
    for decision in made[:5]:
        assert decision.fleet is not None and decision.trace is not None
        recorder.record(decision.fleet, decision.trace)
    recorder.interrupt()
    for decision in made[5:]:
        assert decision.fleet is not None and decision.trace is not None
        recorder.record(decision.fleet, decision.trace)
    assert recorder.transitions == 4 + 7


def test_bad_recordings_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no transitions-"):
        load_recording(tmp_path)
    (tmp_path / "transitions-0000000000001-000000.npz").write_bytes(b"not a zip")
    with pytest.raises(RecordingError, match="not a readable NPZ"):
        load_recording(tmp_path)
    (tmp_path / "transitions-0000000000001-000000.npz").unlink()
    record(tmp_path, decisions(), chunk_intervals=20).flush()
    other_fleet = decisions(churn_limit=1)
    record(tmp_path, other_fleet, start=1_900_000_000, chunk_intervals=20).flush()
    with pytest.raises(RecordingError, match="2 different fleets"):
        load_recording(tmp_path)
    assert len(load_recording(tmp_path, newest_fleet_only=True)) == len(other_fleet) - 1
    with pytest.raises(RecordingError, match="recordings below it"):
        load_recording(tmp_path.parent)


class CachesNothing:
    """A policy whose every cache score is -1: every request goes to the cloud."""

    name = "caches-nothing"

    def reset(self, scenario: Any, seed: int) -> None:
        self.size = 2 * scenario.num_nodes * scenario.num_models + scenario.num_cameras

    def act(self, observation: Any) -> np.ndarray:
        return -np.ones(self.size, np.float32)


def test_replay_scores_policies_on_the_same_recorded_demand(tmp_path: Path) -> None:
    record(tmp_path, decisions(), chunk_intervals=100).flush()
    recording = load_recording(tmp_path)
    lru, nothing = replay(recording, make_policy("lru")), replay(recording, CachesNothing())
    assert lru.intervals == nothing.intervals == len(recording)
    assert nothing.hit_rate == 0.0 and lru.hit_rate > 0.5
    assert lru.mean_objective < nothing.mean_objective
    # LRU replayed from the recording's first cache decides what it decided live.
    assert lru.mean_objective == pytest.approx(recorded_objective(recording), rel=1e-4)


def test_a_candidate_is_promoted_only_when_better_by_the_margin() -> None:
    current = Replay(1.0, 20, 0.5, 3)
    assert judge(Replay(0.9, 20, 0.6, 3), current, 0.05, "abc").promoted
    refused = judge(Replay(0.97, 20, 0.6, 3), current, 0.05, "abc")
    assert refused.outcome == "NotBetter" and "candidate 0.97" in refused.message and "current 1" in refused.message
    assert not judge(Replay(float("nan"), 0, 0.0, 0), current, 0.0, "abc").promoted


class FakeConfigMaps:
    """read/patch of one ConfigMap, as CoreV1Api does them (binaryData base64)."""

    def __init__(self, binary: dict[str, bytes]) -> None:
        self.binary = {key: base64.b64encode(value).decode() for key, value in binary.items()}
        self.patches: list[dict[str, Any]] = []

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        from kubernetes.client import V1ConfigMap, V1ObjectMeta

        return V1ConfigMap(metadata=V1ObjectMeta(name=name, resource_version="7"), binary_data=dict(self.binary))

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.patches.append(body)
        for key, value in body["binaryData"].items():
            if value is None:
                self.binary.pop(key, None)
            else:
                self.binary[key] = value


def _leading() -> Any:
    import contextlib

    return contextlib.nullcontext(True)


def test_the_operator_promotes_a_better_candidate_and_refuses_a_worse_one(tmp_path: Path) -> None:
    from tests.e2e.test_policy_guard import build_actor

    caches_nothing = build_actor(tmp_path / "nothing.onnx", keeps_the_placement=False).read_bytes()
    keeper = build_actor(tmp_path / "keeper.onnx", keeps_the_placement=True).read_bytes()
    policy = _policy_with(algorithm="td3", actor={"configMapName": "city-actor", "key": "actor.onnx"})
    learner = Learner(LearningSettings(tmp_path / "rec", chunk_intervals=100, min_intervals=5), "city", "city")
    spec = policy["spec"]
    # Nothing recorded yet: the candidate waits, nothing is written.
    config_maps = FakeConfigMaps({"actor.onnx": caches_nothing, c.CANDIDATE_KEY: keeper})
    waiting = learner.judge_candidate(config_maps, "city", spec, _leading)  # type: ignore[arg-type]
    assert waiting is not None and waiting.outcome == "CollectingRecording" and not config_maps.patches
    # LRU's placements from its second decision on (the first starts empty): the keeper keeps them,
    # caching nothing loses.
    for decision in decisions()[1:]:
        assert decision.fleet is not None and decision.trace is not None
        learner.recorder.record(
            {**decision.fleet, "policy": {"metadata": {"name": "city"}, "spec": spec}}, decision.trace
        )
    promoted = learner.judge_candidate(config_maps, "city", spec, _leading)  # type: ignore[arg-type]
    assert promoted is not None and promoted.promoted, promoted
    assert promoted.candidate is not None and promoted.current is not None
    assert promoted.candidate.mean_objective < promoted.current.mean_objective
    assert base64.b64decode(config_maps.binary["actor.onnx"]) == keeper and c.CANDIDATE_KEY not in config_maps.binary
    assert config_maps.patches[-1]["metadata"]["resourceVersion"] == "7"
    # Now the worse one is offered: refused, the keeper stays.
    config_maps.binary[c.CANDIDATE_KEY] = base64.b64encode(caches_nothing).decode()
    refused = learner.judge_candidate(config_maps, "city", spec, _leading)  # type: ignore[arg-type]
    assert refused is not None and refused.outcome == "NotBetter"
    assert base64.b64decode(config_maps.binary["actor.onnx"]) == keeper and c.CANDIDATE_KEY not in config_maps.binary
    # A corrupt candidate is refused too; no candidate, no judgement.
    config_maps.binary[c.CANDIDATE_KEY] = base64.b64encode(b"garbage").decode()
    invalid = learner.judge_candidate(config_maps, "city", spec, _leading)  # type: ignore[arg-type]
    assert invalid is not None and invalid.outcome == "InvalidCandidate"
    assert learner.judge_candidate(config_maps, "city", spec, _leading) is None  # type: ignore[arg-type]

    # The status: condition ActorPromotion and status.learning with both scores, kept while nothing is judged.
    now = datetime.datetime(2026, 12, 6, 22, 0, tzinfo=datetime.UTC)
    status = policy_status(Decision(promotion=refused), {}, now)
    (condition,) = [cond for cond in status["conditions"] if cond["type"] == "ActorPromotion"]
    assert condition["status"] == "False" and condition["reason"] == "NotBetter"
    assert status["learning"]["outcome"] == "NotBetter" and float(status["learning"]["candidateObjective"]) > 0
    assert float(status["learning"]["judgeSeconds"]) > 0
    later = policy_status(Decision(), json.loads(json.dumps(status)), now)
    assert [cond for cond in later["conditions"] if cond["type"] == "ActorPromotion"] == [condition]
