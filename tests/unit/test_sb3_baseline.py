"""``edgeaigc bench-sb3``: Stable-Baselines3's TD3 wrapped as one of our policies and scored like ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation

from edgeaigc.cli.main import main
from edgeaigc.policy.benchmark import run_benchmark
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.sb3_baseline import THEIRS, FlatObservationPolicy, FleetSizeMismatch, fleet_size, train_sb3
from edgeaigc.policy.scenario import load_scenario


def edgeaigc(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """The command in this process (a subprocess would import torch again: seconds on a loaded machine)."""
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_wrapper_flattens_as_flatten_observation_did_and_refuses_another_fleet() -> None:
    tiny = load_scenario("tiny")
    env = EdgePlacementEnv(tiny)
    flat_env = FlattenObservation(env)
    assert isinstance(env.observation_space, spaces.Dict)
    wrapper = FlatObservationPolicy(None, env.observation_space, fleet_size(tiny), THEIRS)
    flat, _ = flat_env.reset(seed=3)
    for _ in range(3):  # after some slots too: rates, trends and the cache are not zero any more
        assert env.observation is not None
        np.testing.assert_array_equal(wrapper.flatten(tiny, env.observation), flat)
        flat, *_ = flat_env.step(flat_env.action_space.sample())
    E, M, U = fleet_size(tiny)
    assert flat.shape == (E * M * 19 + U * 5,)

    # Another fleet size changes the width: a clear error, before an episode starts and on every act.
    city = load_scenario("traffic-city")
    with pytest.raises(FleetSizeMismatch, match=r"trained on a fleet of 2 nodes x 6 models x 6 cameras.*5 x 12 x 40"):
        wrapper.reset(city, seed=0)
    city_env = EdgePlacementEnv(city)
    city_env.reset(seed=0)
    assert city_env.observation is not None
    with pytest.raises(FleetSizeMismatch):
        wrapper.flatten(city, city_env.observation)


def test_sb3_trains_on_our_env_and_the_benchmark_scores_it_through_the_wrapper(tmp_path: Path) -> None:
    tiny = load_scenario("tiny").with_overrides(episode_slots=12)
    wrapper, wall = train_sb3(tiny, steps=120, seed=0, threads=1, progress=False, output=tmp_path)
    assert wall > 0 and (tmp_path / f"{THEIRS}.zip").stat().st_size > 0
    # SB3 counted exactly the budget in env steps.
    assert wrapper.model.num_timesteps == 120
    document, per_policy = run_benchmark(tiny, [THEIRS, "lru"], [1000, 1001], progress=False, given={THEIRS: wrapper})
    assert set(document["policies"]) == {THEIRS, "lru"}
    objective = document["policies"][THEIRS]["objective"]["mean"]
    assert np.isfinite(objective) and objective > 0
    assert 0.0 <= document["policies"][THEIRS]["hit_rate"]["mean"] <= 1.0
    assert all(len(result.objective_per_slot) == 12 for result in per_policy[THEIRS])
    # On a fleet of another size the wrapped model cannot run (its input width is fixed).
    with pytest.raises(FleetSizeMismatch):
        run_benchmark(load_scenario("paper"), [THEIRS], [1000], progress=False, given={THEIRS: wrapper})


def test_command_trains_both_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = edgeaigc(
        capsys,
        "bench-sb3", "--scenario", "tiny", "--ours", "train", "--steps", "100", "--seeds", "2", "--no-oracle",
        "--output", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "| td3 | 100 |" in out and f"| {THEIRS} | 100 |" in out
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["seeds"] == [1000, 1001]
    assert {row["policy"] for row in document["comparison"]} == {"td3", THEIRS}
    assert document["winner"] in {"td3", THEIRS}
    assert (tmp_path / "ours" / "actor.onnx").exists() and (tmp_path / f"{THEIRS}.zip").exists()


def test_bad_input_and_a_missing_extra_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "stable_baselines3", None)  # what an install without the extra finds
        code, _, err = edgeaigc(capsys, "bench-sb3", "--scenario", "tiny")
    assert code == 2 and "pip install 'edgeaigc[sb3]'" in err
    code, _, err = edgeaigc(capsys, "bench-sb3", "--scenario", "tiny", "--output", str(tmp_path))
    assert code == 2 and "no td3 actor trained on tiny is shipped" in err
    code, _, err = edgeaigc(capsys, "bench-sb3", "--scenario", "tiny", "--ours", "train", "--output", str(tmp_path))
    assert code == 2 and "--ours train needs --steps" in err
    code, _, err = edgeaigc(capsys, "bench-sb3", "--scenario", "atlantis", "--output", str(tmp_path))
    assert code == 2 and "atlantis" in err
    assert not (tmp_path / "results.json").exists()
