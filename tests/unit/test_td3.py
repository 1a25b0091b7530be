"""TD3/DDPG: equivariant networks, ONNX export parity, the onnxruntime runner, training via the CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeaigc.policy import export as export_module
from edgeaigc.policy import train as train_module
from edgeaigc.policy.actor_runner import ActorLoadError, OnnxActorPolicy
from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.export import export_actor
from edgeaigc.policy.networks import Actor, QNetwork, TwinCritic
from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES
from edgeaigc.policy.td3 import Agent, AgentConfig, ReplayBuffer

P, C = len(PAIR_FEATURES), len(CAMERA_FEATURES)


def flat_action_permuted(
    action: torch.Tensor, E: int, M: int, nodes: torch.Tensor, models: torch.Tensor, cameras: torch.Tensor
) -> torch.Tensor:
    """Apply a permutation of nodes, models and cameras to a flat action ``[..., 2EM + U]``."""
    pairs = E * M
    cache = action[..., :pairs].reshape(*action.shape[:-1], E, M)[..., nodes, :][..., models]
    tilt = action[..., pairs : 2 * pairs].reshape(*action.shape[:-1], E, M)[..., nodes, :][..., models]
    bandwidth = action[..., 2 * pairs :][..., cameras]
    return torch.cat([cache.flatten(-2), tilt.flatten(-2), bandwidth], dim=-1)


def random_observation(
    generator: torch.Generator, E: int, M: int, U: int, batch: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    lead = () if batch is None else (batch,)
    return torch.randn(*lead, E, M, P, generator=generator), torch.randn(*lead, U, C, generator=generator)


@pytest.mark.parametrize("batch", [None, 3])
def test_actor_is_permutation_equivariant(batch: int | None) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    actor = Actor(P, C, hidden=32)
    E, M, U = 4, 5, 7
    pair, camera = random_observation(generator, E, M, U, batch)
    nodes, models, cameras = (
        torch.randperm(E, generator=generator),
        torch.randperm(M, generator=generator),
        torch.randperm(U, generator=generator),
    )
    with torch.no_grad():
        action = actor(pair, camera)
        permuted_input_action = actor(pair[..., nodes, :, :][..., models, :], camera[..., cameras, :])
    expected = flat_action_permuted(action, E, M, nodes, models, cameras)
    assert permuted_input_action.shape == (2 * E * M + U,) if batch is None else (batch, 2 * E * M + U)
    torch.testing.assert_close(permuted_input_action, expected, atol=1e-6, rtol=1e-5)
    # The permutation really moved things (otherwise the check above proves nothing).
    assert not torch.allclose(permuted_input_action, action)


def test_actor_serves_two_fleet_sizes_with_the_same_weights() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    actor = Actor(P, C, hidden=32)
    for E, M, U in ((2, 6, 6), (5, 12, 40)):
        pair, camera = random_observation(generator, E, M, U)
        with torch.no_grad():
            action = actor(pair, camera)
        assert action.shape == (2 * E * M + U,)
        assert torch.all(action.abs() <= 1.0)


def test_critics_are_permutation_invariant_and_batched() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    E, M, U, B = 3, 4, 5, 6
    pair, camera = random_observation(generator, E, M, U, B)
    action = torch.rand(B, 2 * E * M + U, generator=generator) * 2 - 1
    nodes, models, cameras = (
        torch.randperm(E, generator=generator),
        torch.randperm(M, generator=generator),
        torch.randperm(U, generator=generator),
    )
    for critic in (QNetwork(P, C, 32), TwinCritic(P, C, 32)):
        with torch.no_grad():
            q = critic(pair, camera, action)
            q_permuted = critic(
                pair[:, nodes][:, :, models],
                camera[:, cameras],
                flat_action_permuted(action, E, M, nodes, models, cameras),
            )
        for original, permuted in zip(
            q if isinstance(q, tuple) else (q,),
            q_permuted if isinstance(q_permuted, tuple) else (q_permuted,),
            strict=True,
        ):
            assert original.shape == (B,)
            torch.testing.assert_close(permuted, original, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algorithm", ["td3", "ddpg"])
def test_agent_update_changes_the_networks(algorithm: str) -> None:
    torch.manual_seed(0)
    E, M, U = 2, 3, 4
    agent = Agent(P, C, AgentConfig.for_algorithm(algorithm, hidden=16, bc_weight=1.0))  # type: ignore[arg-type]
    assert agent.config.twin_critics == (algorithm == "td3")
    buffer = ReplayBuffer(50, (E, M, P), (U, C), 2 * E * M + U, seed=0)
    rng = np.random.default_rng(0)
    for i in range(50):
        obs = {
            "pair": rng.normal(size=(E, M, P)).astype(np.float32),
            "camera": rng.normal(size=(U, C)).astype(np.float32),
        }
        action = rng.uniform(-1, 1, 2 * E * M + U)
        buffer.add(obs, action, -1.0, obs, False, action if i % 2 else None)
    before = [p.clone() for p in agent.actor.parameters()]
    metrics: dict[str, float] = {}
    for _ in range(2):
        metrics = agent.update(buffer.sample(16))
    assert "actor_loss" in metrics and np.isfinite(metrics["critic_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters(), strict=True))
    restored = ReplayBuffer(50, (E, M, P), (U, C), 2 * E * M + U)
    restored.load_state_dict(buffer.state_dict())
    assert len(restored) == 50 and np.array_equal(restored.pair, buffer.pair)


def test_onnx_export_matches_torch_on_two_fleet_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    actor = Actor(P, C, hidden=32)
    tiny_obs, _ = EdgePlacementEnv("tiny").reset(seed=3)
    path = export_actor(actor, tmp_path / "actor.onnx", tiny_obs, {"scenario": "tiny", "algorithm": "td3"})
    metadata = json.loads((tmp_path / "actor.json").read_text())
    assert metadata["pair_features"] == list(PAIR_FEATURES) and metadata["scenario"] == "tiny"
    policy = OnnxActorPolicy(path, name="td3")
    assert isinstance(policy, PlacementPolicy)
    for scenario in ("tiny", "traffic-city"):
        env = EdgePlacementEnv(scenario)
        observation, _ = env.reset(seed=7)
        observation, *_ = env.step(env.action_space.sample())  # a state with a cache and history
        with torch.no_grad():
            expected = actor(torch.as_tensor(observation["pair"]), torch.as_tensor(observation["camera"])).numpy()
        got = policy.act_encoded(observation)
        assert got.shape == env.action_space.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        # Through the PlacementPolicy protocol, from the raw observation.
        policy.reset(env.scenario, seed=0)
        assert env.unwrapped.observation is not None
        np.testing.assert_allclose(policy.act(env.unwrapped.observation), expected, atol=1e-5, rtol=0)


def test_runner_refuses_missing_corrupt_and_mismatched_actors(tmp_path: Path) -> None:
    with pytest.raises(ActorLoadError, match="no such file"):
        OnnxActorPolicy(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(ActorLoadError, match="not a loadable ONNX model") as error:
        OnnxActorPolicy(corrupt)
    assert error.value.path == corrupt

    obs, _ = EdgePlacementEnv("tiny").reset(seed=0)
    good = export_actor(Actor(P, C, hidden=8), tmp_path / "good.onnx", obs)
    beside = good.with_suffix(".json")
    # A mismatched JSON beside the model is refused...
    document = json.loads(beside.read_text())
    document["pair_features"] = document["pair_features"][::-1]
    beside.write_text(json.dumps(document))
    with pytest.raises(ActorLoadError, match="pair_features"):
        OnnxActorPolicy(good)
    # ...and without the JSON (the operator gets the ONNX bytes alone) the embedded names count.
    beside.unlink()
    assert OnnxActorPolicy(good).metadata["camera_features"] == list(CAMERA_FEATURES)
    model = onnx.load(str(good))
    for entry in model.metadata_props:
        if entry.key == "camera_features":
            entry.value = json.dumps(["something", "else"])
    onnx.save(model, str(good))
    with pytest.raises(ActorLoadError, match="camera_features"):
        OnnxActorPolicy(good)
    del model.metadata_props[:]
    onnx.save(model, str(good))
    with pytest.raises(ActorLoadError, match="no metadata"):
        OnnxActorPolicy(good)


def train_args(output: Path, **overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_module.add_arguments(parser)
    args = parser.parse_args(["--scenario", "tiny", "--output", str(output), "--no-progress"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_train_smoke_writes_artifacts_and_resumes(tmp_path: Path) -> None:
    output = tmp_path / "run"
    budget = {
        "eval_every": 60,
        "eval_episodes": 1,
        "demo_steps": 40,
        "bc_pretrain_steps": 20,
        "hidden": 16,
        "batch_size": 16,
    }
    assert train_module.run(train_args(output, total_steps=120, **budget)) == 0
    for name in ("checkpoint.pt", "best.pt", "log.csv", "learning_curve.png", "actor.onnx", "actor.json"):
        assert (output / name).stat().st_size > 0, name
    assert [row["step"] for row in read_log(output / "log.csv")] == ["60", "120"]
    assert torch.load(output / "checkpoint.pt", weights_only=False)["step"] == 120

    assert train_module.run(train_args(output, total_steps=180, resume=True, **budget)) == 0
    assert [row["step"] for row in read_log(output / "log.csv")] == ["60", "120", "180"]
    assert torch.load(output / "checkpoint.pt", weights_only=False)["step"] == 180
    OnnxActorPolicy(output / "actor.onnx")  # the export still loads

    # `edgeaigc export` re-exports a checkpoint; a missing one is bad input (exit 2).
    parser = argparse.ArgumentParser()
    export_module.add_arguments(parser)
    exported = tmp_path / "again.onnx"
    assert (
        export_module.run(parser.parse_args(["--checkpoint", str(output / "best.pt"), "--output", str(exported)])) == 0
    )
    assert json.loads(exported.with_suffix(".json").read_text())["scenario"] == "tiny"
    OnnxActorPolicy(exported)
    assert (
        export_module.run(parser.parse_args(["--checkpoint", str(tmp_path / "none.pt"), "--output", str(exported)]))
        == 2
    )


def test_train_rejects_unknown_scenario_and_bad_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_module.run(train_args(tmp_path / "x", scenario="no-such-scenario")) == 2
    assert "no-such-scenario" in capsys.readouterr().err
    assert train_module.run(train_args(tmp_path / "y", resume=True)) == 2
    assert "checkpoint.pt" in capsys.readouterr().err


def episode_objective(env: EdgePlacementEnv, act: object, seed: int) -> float:
    """Mean ``-reward`` per slot of one episode; ``act(env) -> action``."""
    env.reset(seed=seed)
    total, slots, done = 0.0, 0, False
    while not done:
        _, reward, _, done, _ = env.step(act(env))  # type: ignore[operator]
        total, slots = total - reward, slots + 1
    return total / slots


@pytest.mark.slow
def test_td3_beats_uniform_random_actions_on_tiny(tmp_path: Path) -> None:
    output = tmp_path / "run"
    args = train_args(
        output,
        total_steps=400,
        eval_every=200,
        eval_episodes=2,
        demo_steps=120,
        bc_pretrain_steps=300,
        hidden=32,
        batch_size=32,
    )
    assert train_module.run(args) == 0
    policy = OnnxActorPolicy(output / "actor.onnx", name="td3")
    env = EdgePlacementEnv("tiny")
    rng = np.random.default_rng(0)
    policy.reset(env.scenario, seed=0)
    seeds = range(1000, 1003)
    trained = np.mean([episode_objective(env, lambda e: policy.act(e.unwrapped.observation), s) for s in seeds])
    uniform = np.mean([episode_objective(env, lambda e: rng.uniform(-1, 1, e.action_space.shape), s) for s in seeds])
    nothing_cached = np.mean([episode_objective(env, lambda e: -np.ones(e.action_space.shape), s) for s in seeds])
    print(f"objective per slot: trained {trained:.3f}, uniform {uniform:.3f}, nothing cached {nothing_cached:.3f}")
    assert trained < uniform, (trained, uniform)
    # Stronger than the brief asks: it also learned to cache (an untrained actor caches ~nothing).
    assert trained < nothing_cached, (trained, nothing_cached)
