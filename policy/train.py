"""``edgeaigc train``: TD3 (or DDPG) on a scenario, CleanRL style, with ONNX export at the end.

Read top to bottom: arguments, setup (or resume), then the loop — act, step, store, learn,
evaluate — then the export of the best actor. Everything lands in ``--output`` (default
``runs/<scenario>-<algorithm>``): ``checkpoint.pt`` (resume point), ``best.pt`` (best actor by
evaluation reward), ``log.csv``, ``learning_curve.png`` and ``actor.onnx`` + ``actor.json``.

Training tricks used (all on by default, each with its flag):

- **Teacher warm-up** (``--demo-steps``): the first episodes are played by the amortised
  myopic teacher of :mod:`.demonstrator` (its cache as ``+-0.5`` scores, zero tilts) plus
  Gaussian noise, instead of random actions, so the buffer holds sensible placements.
- **Behaviour-cloning pre-training** (``--bc-pretrain-steps``) of the actor on those
  demonstrations, then a **behaviour-cloning term** in the actor loss (``--bc-weight``, as in
  TD3+BC) that keeps the actor near the teacher where the critic knows no better. The teacher
  also labels a share of the states the actor itself reaches (``--teacher-labels``, as in
  DAgger), so the imitation holds off the teacher's own path; optionally a share of later
  episodes is played by the teacher (``--demo-fraction``).
- **Gaussian exploration noise** (``--exploration-noise``) on the actor's action.
- **Reward scaling** (``--reward-scale``); observation features are already scale-free.
- **Discount 0.95**: a download pays back over tens of slots, not hundreds.
- **Best-actor selection**: evaluation on held-out seeds (deterministic actor) decides which
  actor is exported.

Episodes are truncated at ``scenario.episode_slots`` and never terminate, so the TD target
always bootstraps. Training episodes use seeds drawn from ``[10_000, 2**31)``; evaluation
uses ``EVAL_SEED_BASE + i`` (500, 501, ...), disjoint from both training and the benchmark's
seeds (1000, 1001, ...).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgeaigc.policy import offline
from edgeaigc.policy.demonstrator import DEFAULT_HORIZON_SLOTS, demonstration_action
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.export import export_actor, load_actor_checkpoint
from edgeaigc.policy.networks import Actor
from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES, Observation
from edgeaigc.policy.plan import action_size
from edgeaigc.policy.registry import shipped_actors
from edgeaigc.policy.residual import ACTION_MODES, residual_action
from edgeaigc.policy.scenario import BUNDLED_SCENARIOS, ScenarioError, load_scenario
from edgeaigc.policy.scenario_family import FamilyRanges, load_family_ranges
from edgeaigc.policy.td3 import ALGORITHMS, Agent, AgentConfig
from edgeaigc.policy.training_worlds import TrainingWorlds, World, validation_worlds

#: The general actor ``--init general`` starts from (``policy/actors/general-td3.pt``).
GENERAL_ACTOR = "general-td3"
#: First evaluation seed (held out from training episodes and from the benchmark's seeds).
EVAL_SEED_BASE = 500
LOG_COLUMNS = (
    "step",
    "episodes",
    "wall_seconds",
    "eval_reward",
    "eval_hit_rate",
    "eval_response_time_s",
    "train_episode_reward",
    "critic_loss",
    "actor_loss",
    "bc_loss",
    "q",
)

#: The agent's hyper-parameters that ``edgeaigc train`` has flags for (``--hidden``, ``--actor-lr``, ...).
AGENT_FLAGS: tuple[str, ...] = ("hidden", "gamma", "reward_scale", "actor_lr", "critic_lr", "bc_weight")


@dataclasses.dataclass
class TrainConfig:
    """Everything ``edgeaigc train`` accepts (one field per flag; the agent's flags set fields of ``agent``)."""

    scenario: str = "traffic-city"
    """Bundled scenario name or path to a scenario YAML (ignored with ``family``)."""
    family: str | None = None
    """Train over worlds drawn from a scenario family instead: ``default`` (the ranges of
    :class:`~edgeaigc.policy.scenario_family.FamilyRanges`) or a YAML file with ``ranges:``."""
    family_episode_slots: int = 120
    """Episode length of drawn worlds (shorter episodes: more worlds per hour)."""
    action_mode: str | None = None
    """``direct`` (the actor's output is the action) or ``residual`` (a correction of the teacher's,
    :mod:`.residual`); default residual for a family or ``--init``, direct otherwise."""
    init: str | None = None
    """Start from an actor: ``general`` (the shipped general actor) or a ``best.pt``; a fine-tune."""
    algorithm: str = "td3"
    """td3 or ddpg."""
    total_steps: int = 60_000
    """Environment steps (slots) in total, warm-up included."""
    max_minutes: float | None = None
    """Stop (evaluate, checkpoint, export) after this many wall-clock minutes of this invocation."""
    seed: int = 1
    """Seed of networks, noise, replay sampling and training episodes."""
    output: Path | None = None
    """Run directory (default runs/<scenario or family>-<algorithm>)."""
    eval_every: int = 2_000
    """Evaluate every this many steps."""
    eval_episodes: int = 3
    """Held-out episodes per evaluation."""
    resume: bool = False
    """Continue from <output>/checkpoint.pt."""
    demo_steps: int = 2_400
    """Warm-up steps played by the teacher before learning starts."""
    demo_fraction: float = 0.0
    """Share of later episodes played by the teacher."""
    teacher_labels: float = 0.25
    """Share of the actor's own steps that the teacher labels with its action (DAgger-style)."""
    demo_horizon: float = DEFAULT_HORIZON_SLOTS
    """Slots the teacher amortises a download over."""
    bc_pretrain_steps: int = 3_000
    """Supervised actor steps on the warm-up demonstrations."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to actions while collecting."""
    batch_size: int = 64
    """Replay batch size."""
    buffer_size: int = 100_000
    """Replay capacity."""
    update_every: int = 1
    """Environment steps per gradient update."""
    agent: AgentConfig = dataclasses.field(default_factory=lambda: AgentConfig(bc_weight=5.0))
    """The agent's hyper-parameters for TD3 (``algorithm`` ddpg makes DDPG's of them); training
    learns from the teacher's demonstrations by default. :data:`AGENT_FLAGS` can be set from the
    command line."""
    save_replay: bool = False
    """Also save the replay buffer in checkpoints (large; lets --resume keep it)."""
    threads: int = 1
    """torch intra-op threads."""
    progress: bool = True
    """Show a tqdm progress bar."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Deterministic actor on held-out seeds."""

    reward: float
    """Mean reward per slot (mean over episodes)."""
    hit_rate: float
    response_time_s: float


def evaluate(policy: Any, env: EdgePlacementEnv, episodes: int, seed_base: int = EVAL_SEED_BASE) -> Evaluation:
    """Run ``policy(observation) -> action`` on ``episodes`` held-out seeds (request-weighted figures)."""
    rewards, hits, requests, response = [], 0.0, 0.0, 0.0
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed_base + episode)
        total, slots, done = 0.0, 0, False
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            total, slots, done = total + reward, slots + 1, terminated or truncated
            hits += info["hits"]
            requests += info["requests"]
            response += info["mean_response_time_s"] * info["requests"]
        rewards.append(total / slots)
    requests = max(requests, 1e-12)
    return Evaluation(float(np.mean(rewards)), hits / requests, response / requests)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def actor_checkpoint(actor: Actor, metadata: dict[str, Any]) -> dict[str, Any]:
    """What ``best.pt`` holds: enough to rebuild and export the actor without the agent."""
    return {
        "actor": actor.state_dict(),
        "actor_spec": {
            "pair_features": actor.pair_features,
            "camera_features": actor.camera_features,
            "hidden": actor.hidden,
        },
        "metadata": metadata,
    }


def write_learning_curve(log_path: Path, image_path: Path, title: str) -> None:
    """Plot evaluation reward (and training episode reward) against steps from ``log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_path.open() as handle:
        rows = list(csv.DictReader(handle))

    def column(name: str) -> tuple[list[float], list[float]]:
        points = [(float(r["step"]), float(r[name])) for r in rows if r[name] not in ("", "nan")]
        return [p[0] for p in points], [p[1] for p in points]

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(*column("eval_reward"), marker="o", label="evaluation (held-out seeds)")
    axis.plot(*column("train_episode_reward"), alpha=0.6, label="training episodes (with noise)")
    axis.set_xlabel("environment steps")
    axis.set_ylabel("mean reward per slot")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(image_path, dpi=100)
    plt.close(figure)


def _current(env: EdgePlacementEnv) -> Observation:
    """The env's current observation (it has one once reset)."""
    if env.observation is None:
        raise RuntimeError("the environment has not been reset")
    return env.observation


def _init_actor(init: str) -> tuple[Actor, dict[str, Any]]:
    """The actor a fine-tune starts from: the shipped general actor, or a ``best.pt``."""
    path = shipped_actors() / f"{GENERAL_ACTOR}.pt" if init == "general" else Path(init)
    if not path.exists():
        raise ValueError(f"--init: {path} does not exist (use 'general' or a best.pt of `edgeaigc train`)")
    try:
        return load_actor_checkpoint(path)
    except (RuntimeError, KeyError, OSError) as error:
        raise ValueError(f"--init: cannot read {path}: {error}") from error


def _normalised_evaluation(
    policy_for: Callable[[EdgePlacementEnv], Callable[[dict[str, np.ndarray]], np.ndarray]],
    envs: list[EdgePlacementEnv],
    references: list[float],
    episodes: int,
) -> Evaluation:
    """Over several worlds: reward is minus the mean of (objective / the teacher's objective)."""
    results = [evaluate(policy_for(env), env, episodes) for env in envs]
    ratios = [result.reward / reference for result, reference in zip(results, references, strict=True)]
    return Evaluation(
        -float(np.mean(ratios)),
        float(np.mean([r.hit_rate for r in results])),
        float(np.mean([r.response_time_s for r in results])),
    )


def train(config: TrainConfig) -> Path:
    """Train, writing everything to the run directory; returns the exported ONNX path.

    Raises:
        ScenarioError: the scenario or family cannot be loaded.
        ValueError: bad settings or a checkpoint that does not match.
    """
    if config.algorithm not in ALGORITHMS:
        raise ValueError(f"--algorithm must be one of {ALGORITHMS}, got {config.algorithm!r}")
    action_mode = config.action_mode or ("residual" if config.family or config.init else "direct")
    if action_mode not in ACTION_MODES:
        raise ValueError(f"--action-mode must be one of {ACTION_MODES}, got {action_mode!r}")
    residual = action_mode == "residual"
    ranges: FamilyRanges | None = None
    if config.family is not None:
        ranges = load_family_ranges(config.family)
        worlds = TrainingWorlds(
            ranges=ranges, capacity=config.buffer_size, episode_slots=config.family_episode_slots, seed=config.seed
        )
        run_name = f"family-{Path(config.family).stem}"
        eval_envs = validation_worlds(ranges, config.family_episode_slots)
    else:
        scenario = load_scenario(config.scenario)
        worlds = TrainingWorlds(scenario, capacity=config.buffer_size, seed=config.seed)
        run_name = scenario.name
        eval_envs = [EdgePlacementEnv(scenario)]
    output = config.output or Path("runs") / f"{run_name}-{config.algorithm}"
    output.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, config.threads))
    # ``started`` dates the whole run (resumed parts included) for the log; the --max-minutes
    # budget counts from this invocation's start.
    started = invocation_started = time.monotonic()

    # Seeding: one numpy generator drives noise, worlds and episode seeds, torch's the networks.
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    agent = Agent(len(PAIR_FEATURES), len(CAMERA_FEATURES), config.agent.as_algorithm(config.algorithm))
    metadata: dict[str, Any] = {
        "scenario": run_name,
        "scenario_path": None if config.family or config.scenario in BUNDLED_SCENARIOS else config.scenario,
        "family": config.family,
        "algorithm": config.algorithm,
        "action_mode": action_mode,
        "teacher_horizon_slots": config.demo_horizon,
        "pair_features": list(PAIR_FEATURES),
        "camera_features": list(CAMERA_FEATURES),
        "seed": config.seed,
        "init": config.init,
    }
    if config.init is not None and not config.resume:
        init_actor, init_metadata = _init_actor(config.init)
        if init_actor.hidden != config.agent.hidden:
            raise ValueError(f"--init: the actor has hidden {init_actor.hidden}, not --hidden {config.agent.hidden}")
        if init_metadata.get("action_mode", "direct") != action_mode:
            raise ValueError(f"--init: the actor is {init_metadata.get('action_mode', 'direct')}, not {action_mode}")
        agent.actor.load_state_dict(init_actor.state_dict())
        agent.actor_target.load_state_dict(init_actor.state_dict())

    def apply(env: EdgePlacementEnv, action: np.ndarray) -> np.ndarray:
        """The action the env gets: the actor's, or for a residual actor the teacher's corrected by it."""
        if not residual:
            return action
        return residual_action(env.scenario, _current(env), action, config.demo_horizon)

    def policy_for(env: EdgePlacementEnv) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        return lambda observation: apply(env, agent.act(observation))

    # A family's evaluation is relative to the teacher on each validation world (worlds differ
    # in scale by orders of magnitude); the teacher's figures are computed once.
    references: list[float] = []
    if ranges is not None:
        for env in eval_envs:

            def teacher(observation: dict[str, np.ndarray], env: EdgePlacementEnv = env) -> np.ndarray:
                return demonstration_action(env.scenario, _current(env), config.demo_horizon)

            references.append(evaluate(teacher, env, config.eval_episodes).reward)

    def run_evaluation() -> Evaluation:
        if ranges is None:
            return evaluate(policy_for(eval_envs[0]), eval_envs[0], config.eval_episodes)
        return _normalised_evaluation(policy_for, eval_envs, references, config.eval_episodes)

    # Resume: networks, optimisers, counters, random generators (and the buffer if saved).
    step, episodes, best_reward, bc_done = 0, 0, -math.inf, False
    checkpoint_path = output / "checkpoint.pt"
    log_path = output / "log.csv"
    if config.resume:
        if not checkpoint_path.exists():
            raise ValueError(f"--resume: {checkpoint_path} does not exist")
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state["metadata"]["algorithm"] != config.algorithm or state["metadata"]["scenario"] != run_name:
            raise ValueError(
                f"--resume: {checkpoint_path} is {state['metadata']['algorithm']} on "
                f"{state['metadata']['scenario']}, not {config.algorithm} on {run_name}"
            )
        try:
            agent.load_state_dict(state["agent"])
        except RuntimeError as error:  # e.g. another --hidden than the checkpoint's
            raise ValueError(f"--resume: {checkpoint_path} does not fit these settings: {error}") from error
        step, episodes = int(state["step"]), int(state["episodes"])
        best_reward, bc_done = float(state["best_reward"]), bool(state["bc_done"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if "replay" in state and worlds.single is not None:
            worlds.single.buffer.load_state_dict(state["replay"])
        started -= float(state["wall_seconds"])
    else:
        with log_path.open("w", newline="") as handle:
            csv.writer(handle).writerow(LOG_COLUMNS)

    def save_checkpoint() -> None:
        state = {
            "agent": agent.state_dict(),
            "actor_spec": {
                "pair_features": len(PAIR_FEATURES),
                "camera_features": len(CAMERA_FEATURES),
                "hidden": config.agent.hidden,
            },
            "actor": agent.actor.state_dict(),
            "metadata": {**metadata, "steps": step},
            "step": step,
            "episodes": episodes,
            "best_reward": best_reward,
            "bc_done": bc_done,
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "wall_seconds": time.monotonic() - started,
            "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
        }
        if config.save_replay and worlds.single is not None:
            state["replay"] = worlds.single.buffer.state_dict()
        torch.save(state, checkpoint_path)

    def new_episode() -> tuple[World, dict[str, np.ndarray], bool]:
        """Pick the world, reset on a fresh training seed, decide whether the teacher plays."""
        world = worlds.next_world(rng)
        observation, _ = world.env.reset(seed=int(rng.integers(10_000, 2**31 - 1)))
        teacher = step < config.demo_steps or rng.random() < config.demo_fraction
        return world, observation, teacher

    world, observation, teacher_episode = new_episode()
    env, buffer = world.env, world.buffer
    episode_reward, episode_slots = 0.0, 0
    recent_episode_rewards: list[float] = []
    recent_metrics: dict[str, list[float]] = {}
    stopped_early = False
    bar = tqdm(
        total=config.total_steps,
        initial=step,
        desc=f"{config.algorithm} {run_name}",
        unit="step",
        disable=not config.progress,
    )
    while step < config.total_steps:
        # Act: the teacher (warm-up and a share of episodes) or the actor, plus exploration noise.
        # For a residual actor the teacher's own action is the residual 0.
        demo_action = None
        if teacher_episode:
            if residual:
                demo_action = np.zeros(action_size(env.scenario), np.float32)
            else:
                demo_action = demonstration_action(env.scenario, _current(env), config.demo_horizon)
            action = demo_action.copy()
        else:
            action = agent.act(observation)
            if rng.random() < config.teacher_labels:
                # Label the state the actor reached (not only the teacher's own states).
                if residual:
                    demo_action = np.zeros_like(action)
                else:
                    demo_action = demonstration_action(env.scenario, _current(env), config.demo_horizon)
        action = np.clip(action + rng.normal(0.0, config.exploration_noise, action.shape), -1.0, 1.0).astype(np.float32)

        # Step the environment and store the transition (truncation is not termination).
        next_observation, reward, terminated, truncated, _ = env.step(apply(env, action))
        buffer.add(observation, action, world.learning_reward(reward), next_observation, terminated, demo_action)
        observation = next_observation
        step += 1
        bar.update(1)
        episode_reward += reward
        episode_slots += 1
        if terminated or truncated:
            if not teacher_episode:
                recent_episode_rewards.append(episode_reward / episode_slots)
            episodes += 1
            episode_reward, episode_slots = 0.0, 0
            world, observation, teacher_episode = new_episode()
            env, buffer = world.env, world.buffer

        # Learn: once, behaviour cloning on the warm-up demonstrations; then TD3/DDPG updates.
        if step >= config.demo_steps:
            if not bc_done:
                for _ in range(config.bc_pretrain_steps if config.demo_steps > 0 else 0):
                    agent.behaviour_cloning_step(worlds.sample(config.batch_size, rng))
                agent.sync_targets()
                bc_done = True
            # (After a resume without a saved buffer, wait until a batch's worth is collected.)
            if step % config.update_every == 0 and len(buffer) >= config.batch_size:
                for name, value in agent.update(worlds.sample(config.batch_size, rng)).items():
                    recent_metrics.setdefault(name, []).append(value)

        out_of_time = config.max_minutes is not None and time.monotonic() - invocation_started > 60 * config.max_minutes
        if out_of_time:
            stopped_early = True
        # Evaluate the deterministic actor on held-out seeds; log, checkpoint, keep the best.
        if step % config.eval_every == 0 or step >= config.total_steps or out_of_time:
            evaluation = run_evaluation()
            if evaluation.reward > best_reward:
                best_reward = evaluation.reward
                best = actor_checkpoint(
                    agent.actor,
                    {
                        **metadata,
                        "steps": step,
                        "eval_reward": evaluation.reward,
                        "eval_reward_meaning": (
                            "mean reward per slot"
                            if ranges is None
                            else "minus the mean over validation worlds of objective / teacher's objective"
                        ),
                        "eval_hit_rate": evaluation.hit_rate,
                        "eval_response_time_s": evaluation.response_time_s,
                        "eval_seeds": [EVAL_SEED_BASE + i for i in range(config.eval_episodes)],
                    },
                )
                torch.save(best, output / "best.pt")

            with log_path.open("a", newline="") as handle:
                csv.writer(handle).writerow(
                    [
                        step,
                        episodes,
                        f"{time.monotonic() - started:.1f}",
                        f"{evaluation.reward:.5f}",
                        f"{evaluation.hit_rate:.5f}",
                        f"{evaluation.response_time_s:.5f}",
                        f"{_mean(recent_episode_rewards):.5f}",
                        *(
                            f"{_mean(recent_metrics.get(k, [])):.5f}"
                            for k in ("critic_loss", "actor_loss", "bc_loss", "q")
                        ),
                    ]
                )
            recent_episode_rewards.clear()
            recent_metrics.clear()
            save_checkpoint()
            write_learning_curve(log_path, output / "learning_curve.png", f"{config.algorithm.upper()} on {run_name}")
            bar.set_postfix(
                eval=f"{evaluation.reward:.3f}",
                hit=f"{evaluation.hit_rate:.2f}",
                rt_ms=f"{evaluation.response_time_s * 1000:.0f}",
                best=f"{best_reward:.3f}",
            )
        if out_of_time:
            break
    bar.close()

    # Export the best actor (by evaluation reward) to ONNX, with its metadata.
    best_state = torch.load(output / "best.pt", map_location="cpu", weights_only=False)
    spec = best_state["actor_spec"]
    best_actor = Actor(spec["pair_features"], spec["camera_features"], spec["hidden"])
    best_actor.load_state_dict(best_state["actor"])
    onnx_path = export_actor(
        best_actor,
        output / "actor.onnx",
        eval_envs[0].reset(seed=EVAL_SEED_BASE)[0],
        {
            **best_state["metadata"],
            "total_steps": step,
            "worlds_drawn": worlds.worlds_drawn,
            "wall_seconds": round(time.monotonic() - started, 1),
            "stopped_early": stopped_early,
        },
    )
    return onnx_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument(
        "--scenario", default=defaults.scenario, help=f"bundled scenario ({', '.join(BUNDLED_SCENARIOS)}) or YAML path"
    )
    parser.add_argument(
        "--family",
        default=None,
        help="train over worlds drawn from a scenario family instead: 'default' or a YAML file with 'ranges:'",
    )
    parser.add_argument(
        "--family-episode-slots",
        type=int,
        default=defaults.family_episode_slots,
        help="episode length of drawn worlds",
    )
    parser.add_argument(
        "--action-mode",
        choices=ACTION_MODES,
        default=None,
        help="direct, or residual (a correction of the amortised-myopic teacher); default residual with "
        "--family or --init, direct otherwise",
    )
    parser.add_argument(
        "--init",
        default=None,
        help="fine-tune from an actor: 'general' (the shipped general actor) or a best.pt",
    )
    parser.add_argument("--algorithm", choices=ALGORITHMS, default=defaults.algorithm, help="td3 (default) or ddpg")
    parser.add_argument("--total-steps", type=int, default=defaults.total_steps, help="environment steps in total")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock budget; stop, evaluate and export when spent"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", type=Path, default=None, help="run directory (default runs/<scenario>-<algorithm>)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between evaluations")
    parser.add_argument(
        "--eval-episodes", type=int, default=defaults.eval_episodes, help="held-out episodes per evaluation"
    )
    parser.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    parser.add_argument("--demo-steps", type=int, default=defaults.demo_steps, help="teacher warm-up steps")
    parser.add_argument(
        "--demo-fraction",
        type=float,
        default=defaults.demo_fraction,
        help="share of later episodes played by the teacher",
    )
    parser.add_argument(
        "--teacher-labels",
        type=float,
        default=defaults.teacher_labels,
        help="share of actor steps labelled by the teacher",
    )
    parser.add_argument(
        "--demo-horizon", type=float, default=defaults.demo_horizon, help="slots the teacher amortises a download over"
    )
    parser.add_argument(
        "--bc-pretrain-steps",
        type=int,
        default=defaults.bc_pretrain_steps,
        help="behaviour-cloning steps after warm-up",
    )
    parser.add_argument(
        "--bc-weight",
        type=float,
        default=defaults.agent.bc_weight,
        help="behaviour-cloning weight in the actor loss (0: off)",
    )
    parser.add_argument("--exploration-noise", type=float, default=defaults.exploration_noise)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--buffer-size", type=int, default=defaults.buffer_size)
    parser.add_argument(
        "--update-every", type=int, default=defaults.update_every, help="environment steps per gradient update"
    )
    parser.add_argument("--hidden", type=int, default=defaults.agent.hidden)
    parser.add_argument("--gamma", type=float, default=defaults.agent.gamma)
    parser.add_argument("--reward-scale", type=float, default=defaults.agent.reward_scale)
    parser.add_argument("--actor-lr", type=float, default=defaults.agent.actor_lr)
    parser.add_argument("--critic-lr", type=float, default=defaults.agent.critic_lr)
    parser.add_argument("--save-replay", action="store_true", help="store the replay buffer in checkpoints")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads (default 1)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    offline.add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args)
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    agent = dataclasses.replace(TrainConfig().agent, **{name: values[name] for name in AGENT_FLAGS if name in values})
    return TrainConfig(**{name: value for name, value in values.items() if name in fields}, agent=agent)


def run(args: argparse.Namespace) -> int:
    if args.from_recording is not None:
        return offline.run(args)
    try:
        config = config_from_args(args)
        if (
            min(config.total_steps, config.eval_every, config.eval_episodes, config.batch_size) < 1
            or config.family_episode_slots < 1
        ):
            raise ValueError(
                "--total-steps, --eval-every, --eval-episodes, --batch-size and --family-episode-slots must be >= 1"
            )
        onnx_path = train(config)
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {onnx_path}")
    return 0
