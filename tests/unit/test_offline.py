"""``edgeaigc train --from-recording``: TD3+BC on a recording, bad recordings refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeaigc.cli.main import main
from edgeaigc.policy.actor_runner import OnnxActorPolicy
from edgeaigc.policy.recording import load_recording
from edgeaigc.policy.replay import replay
from tests.unit.test_learning import decisions, record

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LRU's decisions from its second on (it starts from an empty cache)."""
    directory = tmp_path_factory.mktemp("recording")
    record(directory, decisions()[1:], chunk_intervals=100).flush()
    return directory


def test_a_fresh_actor_learns_the_recorded_placements_and_beats_a_bad_one(recording: Path, tmp_path: Path) -> None:
    # (A fine-tune from the hand-made bad actor would not move: its tanh head sits at -10 with zero
    # weights, where no gradient flows; a fresh actor learns from the recorded actions.)
    from tests.e2e.test_policy_guard import build_actor

    bad = build_actor(tmp_path / "caches-nothing.onnx", keeps_the_placement=False)
    output = tmp_path / "run"
    arguments = ["train", "--from-recording", str(recording), "--output", str(output)]
    assert main([*arguments, "--offline-updates", "200", "--no-progress"]) == 0
    candidate = output / "candidate.onnx"
    metadata = json.loads((output / "candidate.json").read_text())["offline"]
    assert metadata["transitions"] == 11 and metadata["method"] == "td3+bc"
    # The operator's promotion replays the exported files: the candidate must be better there too.
    data = load_recording(recording)
    fine_tuned = replay(data, OnnxActorPolicy(candidate))
    started_from = replay(data, OnnxActorPolicy(bad))
    assert fine_tuned.mean_objective < 0.9 * started_from.mean_objective, (fine_tuned, started_from)
    assert fine_tuned.mean_objective == pytest.approx(metadata["counterfactual_objective"], rel=1e-4)
    assert started_from.hit_rate == 0.0 and fine_tuned.hit_rate > 0.3
    assert "objective" in (output / "log.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt", "mixed", "bad-init"])
def test_bad_input_exits_2_with_a_reason(
    problem: str, recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, init = tmp_path / "rec", None
    directory.mkdir()
    if problem == "missing":
        directory = tmp_path / "nowhere"
    elif problem == "corrupt":
        (directory / "transitions-0000000000001-000000.npz").write_bytes(b"PK\x03\x04 truncated")
    elif problem == "mixed":
        for path in recording.glob("*.npz"):
            (directory / path.name).write_bytes(path.read_bytes())
        record(directory, decisions(churn_limit=1)[1:], start=1_900_000_000, chunk_intervals=100).flush()
    elif problem == "bad-init":
        directory, init = recording, tmp_path / "actor.onnx"
        init.write_bytes(b"not onnx")
    arguments = ["train", "--from-recording", str(directory), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main([*arguments, *(["--init", str(init)] if init else [])]) == 2
    error = capsys.readouterr().err
    expected = {
        "missing": "is not a directory",
        "empty": "no transitions-",
        "corrupt": "not a readable NPZ",
        "mixed": "different fleets",
        "bad-init": "not an ONNX model",
    }[problem]
    assert expected in error
