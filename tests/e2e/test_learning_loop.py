"""Learning from the live loop end to end: record, fine-tune offline, promote only what is better.

The traffic-city fleet runs a TD3 PlacementPolicy whose actor caches nothing (built by hand, as in
test_policy_guard); the guard soon hands control to a heuristic, so the operator's recording
(``--record-dir``) holds the bad actor's intervals and then the heuristic's. ``edgeaigc train
--from-recording`` fine-tunes a fresh actor on it with a tiny budget (TD3+BC: it learns the recorded
placements), and the candidate goes into the actor ConfigMap under ``candidate.onnx``. The operator
replays both actors on the recorded demand and promotes the candidate (condition ``ActorPromotion``
True, ``status.learning`` with both scores, an event), then runs it: td3 is back in control with a
placement of its own. Offered the caches-nothing actor again as a candidate, it refuses it and the
fine-tuned actor stays.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeaigc.cluster.local import ClusterState
from edgeaigc.policy.recording import recording_files
from tests.e2e.city_fleet import CityPolicy, build_actor, free_port, operator_running, start_city
from tests.e2e.conftest import Kubectl, wait_for

NAMESPACE = "learning-e2e"
INTERVAL_S = 5  # the CRD's minimum
GUARD = {"margin": 0.05, "windowIntervals": 3, "minDwellIntervals": 3}
CHUNK_INTERVALS = 5
#: Transitions recorded before the fine-tune: the heuristic's placements make most of them.
RECORDED = 10


class Fleet(CityPolicy):
    def __init__(self, kubectl: Kubectl, recording: Path, logs: Path, bad_actor: Path, metrics_port: int) -> None:
        super().__init__(kubectl, NAMESPACE, metrics_port)
        self.recording, self.logs, self.bad_actor = recording, logs, bad_actor

    def actor_config_map(self) -> dict[str, bytes]:
        config_map = json.loads(self.kubectl.run("get", "cm", "city-actor", "-n", NAMESPACE, "-o", "json").stdout)
        return {key: base64.b64decode(value) for key, value in (config_map.get("binaryData") or {}).items()}

    def offer(self, candidate: Path) -> None:
        patch = {"binaryData": {"candidate.onnx": base64.b64encode(candidate.read_bytes()).decode()}}
        patch_file = self.logs / f"offer-{candidate.stem}.json"  # an actor is too long for an argument
        patch_file.write_text(json.dumps(patch))
        self.kubectl.run("patch", "cm", "city-actor", "-n", NAMESPACE, "--type=merge", "--patch-file", str(patch_file))

    def transitions(self) -> int:
        return CHUNK_INTERVALS * len(recording_files(self.recording))


@pytest.fixture(scope="module")
def fleet(cluster: ClusterState, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("learning-e2e")
    bad_actor = build_actor(logs / "caches-nothing.onnx", keeps_the_placement=False)
    twin = start_city(cluster, kubectl, NAMESPACE, bad_actor, GUARD, INTERVAL_S, logs)
    record_dir = logs / "recording"
    port = free_port()
    arguments = [
        "operator", "-n", NAMESPACE, "--metrics-port", str(port), "--liveness-port", "0",
        "--record-dir", str(record_dir), "--record-chunk-intervals", str(CHUNK_INTERVALS),
        "--promotion-margin", "0.05", "--promotion-min-intervals", "10",
    ]  # fmt: skip
    with operator_running(cluster, kubectl, NAMESPACE, twin, arguments, logs):
        yield Fleet(kubectl, record_dir / NAMESPACE / "city", logs, bad_actor, port)


def test_a_fine_tuned_actor_is_promoted_and_run_and_a_worse_one_refused(fleet: Fleet, kubectl: Kubectl) -> None:
    wait_for(lambda: fleet.condition("Ready").get("status") == "True", 90, "the first decision")
    wait_for(lambda: fleet.condition("PolicyFallback").get("status") == "True", 12 * INTERVAL_S + 10, "the fallback")
    wait_for(lambda: fleet.transitions() >= RECORDED, (RECORDED + 6) * INTERVAL_S, f"{RECORDED} recorded transitions")

    # Fine-tune offline from the recording, tiny budget.
    output = fleet.logs / "fine-tune"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "train", "--from-recording", str(fleet.recording),
         "--output", str(output), "--offline-updates", "100", "--eval-every", "25", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    print(f"fine-tune: {time.monotonic() - started:.1f} s; {result.stdout.strip()}")
    candidate = output / "candidate.onnx"

    # Promoted: the ConfigMap's actor becomes the candidate, the status and an event say so with both scores.
    fleet.offer(candidate)
    promotion = wait_for(
        lambda: (c := fleet.condition("ActorPromotion")).get("status") in ("True", "False") and c,
        4 * INTERVAL_S + 10,
        "the candidate's judgement",
    )
    learning = fleet.policy()["status"]["learning"]
    assert promotion["reason"] == "Promoted", (promotion, learning)
    assert float(learning["candidateObjective"]) < float(learning["currentObjective"]) / 1.05
    assert learning["intervals"] >= 10
    print(f"promoted: {learning}")
    config_map = fleet.actor_config_map()
    assert config_map["actor.onnx"] == candidate.read_bytes() and "candidate.onnx" not in config_map
    wait_for(
        lambda: "promoted" in kubectl.run(
            "get", "events", "-n", NAMESPACE, "--field-selector", "reason=ActorPromoted").stdout,
        3 * INTERVAL_S, "the ActorPromoted event",
    )  # fmt: skip
    # The operator loads it: the guard starts afresh with td3 (the candidate) in control, and it places models.
    back = wait_for(
        lambda: (c := fleet.condition("PolicyFallback")).get("status") == "False" and c,
        4 * INTERVAL_S,
        "td3 in control again",
    )
    assert back["reason"] in ("CollectingWindow", "Dwelling", "WithinMargin")
    assert fleet.policy()["status"]["guard"]["inControl"] == "td3"
    assert any(p.get("models") for p in fleet.policy()["status"]["placement"])

    # A worse candidate (the actor that caches nothing) is refused: the status says why, the actor stays.
    before = fleet.policy()["status"]["learning"]["lastJudgedTime"]
    fleet.offer(fleet.bad_actor)
    refused = wait_for(
        lambda: (c := fleet.condition("ActorPromotion")).get("reason") == "NotBetter" and c,
        4 * INTERVAL_S + 10,
        "the worse candidate refused",
    )
    assert refused["status"] == "False" and "refused, not better" in refused["message"]
    learning = fleet.policy()["status"]["learning"]
    assert learning["outcome"] == "NotBetter" and learning["lastJudgedTime"] >= before
    assert float(learning["candidateObjective"]) > float(learning["currentObjective"])
    config_map = fleet.actor_config_map()
    assert config_map["actor.onnx"] == candidate.read_bytes() and "candidate.onnx" not in config_map
    print(f"refused: {learning}")

    # What recording costs: time per interval (the operator's histogram) and bytes per transition on disk.
    seconds = fleet.metric('edgeaigc_operator_recording_duration_seconds_sum{policy="city"}')
    count = fleet.metric('edgeaigc_operator_recording_duration_seconds_count{policy="city"}')
    recorded = fleet.metric('edgeaigc_operator_recorded_transitions_total{policy="city"}')
    assert seconds is not None and count and recorded and recorded >= RECORDED
    assert fleet.metric('edgeaigc_operator_actor_promotions_total{outcome="Promoted",policy="city"}') == 1.0
    files = recording_files(fleet.recording)
    size = sum(f.stat().st_size for f in files) / (CHUNK_INTERVALS * len(files))
    print(
        f"recording: {1000 * seconds / count:.2f} ms per interval over {count:.0f} intervals (file writes included), "
        f"{size / 1024:.1f} KiB per transition on disk, {recorded:.0f} transitions"
    )
