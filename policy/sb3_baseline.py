"""``edgeaigc bench-sb3``: our TD3 against Stable-Baselines3's TD3, same env, same step budget.

Stable-Baselines3 (the optional extra ``edgeaigc[sb3]``) trains its TD3 with its documented
defaults (``MlpPolicy``: 400-300 MLPs, batch 256, learning rate 1e-3, policy delay 2, ...) plus
the Gaussian action noise of its TD3 example (sigma 0.1), on ``edgeaigc/EdgePlacement-v0``
flattened by Gymnasium's ``FlattenObservation`` — a flat MLP input whose width is fixed by the
fleet (E nodes, M models, U cameras) it was trained on. Ours is the shipped actor of the scenario
(its recorded budget is the one SB3 gets) or one trained here with the same budget
(``--ours train``). Both are then scored by :func:`~edgeaigc.policy.benchmark.run_benchmark` on
the same seeds and episodes: the SB3 model is wrapped as a
:class:`~edgeaigc.policy.base.PlacementPolicy` (:class:`FlatObservationPolicy`), so there is one
evaluation path.

The replay buffer is sized to the budget (SB3's default holds 10⁶ transitions; never more than
the budget are stored, so the algorithm is the same, without reserving gigabytes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import util
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from edgeaigc.policy.benchmark import DEFAULT_SEED_BASE, run_benchmark
from edgeaigc.policy.observation import Observation, encode
from edgeaigc.policy.registry import make_policy, shipped_actors
from edgeaigc.policy.scenario import BUNDLED_SCENARIOS, Scenario, ScenarioError, load_scenario

SB3_INSTALL_HINT = "pip install 'edgeaigc[sb3]'  (or: pip install stable-baselines3)"
#: Names of the two learned policies in the table.
OURS, THEIRS = "td3", "sb3-td3"
#: Std of SB3's Gaussian action noise, as in its TD3 documentation's example.
SB3_ACTION_NOISE_SIGMA = 0.1
OURS_CHOICES = ("shipped", "train")


class FleetSizeMismatch(ValueError):
    """A flat-observation model meets a fleet of another size than the one it was trained on."""


def fleet_size(scenario: Scenario) -> tuple[int, int, int]:
    """(nodes, models, cameras): what the width of a flat observation depends on."""
    return scenario.num_nodes, scenario.num_models, scenario.num_cameras


class FlatObservationPolicy:
    """A model that acts on flat observations (SB3's ``predict``), as one of our placement policies.

    The observation is encoded as for our actor (:func:`~edgeaigc.policy.observation.encode`) and
    flattened exactly as ``FlattenObservation`` did in training (``gymnasium.spaces.flatten`` over
    the training env's Dict space). The flat width is ``E*M*P + U*C``, so the model serves only the
    fleet size it was trained on; another size is refused with :class:`FleetSizeMismatch`.
    """

    def __init__(self, model: Any, observation_space: spaces.Dict, trained_fleet: tuple[int, int, int], name: str):
        """
        Args:
            model: anything with SB3's ``predict(observation, deterministic=True) -> (action, state)``.
            observation_space: the Dict space of the env the model was trained on.
            trained_fleet: (nodes, models, cameras) of that env's scenario.
        """
        self.model = model
        self.observation_space = observation_space
        self.trained_fleet = trained_fleet
        self.name = name
        self.scenario: Scenario | None = None

    def check_fleet(self, scenario: Scenario) -> None:
        if fleet_size(scenario) != self.trained_fleet:
            E, M, U = self.trained_fleet
            e, m, u = fleet_size(scenario)
            raise FleetSizeMismatch(
                f"{self.name} was trained on a fleet of {E} nodes x {M} models x {U} cameras; {scenario.name} has "
                f"{e} x {m} x {u}: a flat observation ties the model to one fleet size (retrain it for this one)"
            )

    def flatten(self, scenario: Scenario, observation: Observation) -> np.ndarray:
        """The flat observation the model was trained on (``FlattenObservation``'s order and width)."""
        self.check_fleet(scenario)
        return np.asarray(spaces.flatten(self.observation_space, encode(scenario, observation)), np.float32)

    def reset(self, scenario: Scenario, seed: int) -> None:
        self.check_fleet(scenario)
        self.scenario = scenario

    def act(self, observation: Observation) -> np.ndarray:
        if self.scenario is None:
            raise RuntimeError("call reset(scenario, seed) before act()")
        action, _ = self.model.predict(self.flatten(self.scenario, observation), deterministic=True)
        return np.asarray(action, np.float32)


def sb3_available() -> bool:
    return util.find_spec("stable_baselines3") is not None


def train_sb3(
    scenario: Scenario, steps: int, seed: int, threads: int, progress: bool, output: Path
) -> tuple[FlatObservationPolicy, float]:
    """SB3's TD3 on the flattened env for exactly ``steps`` env steps; the wrapped model and wall seconds."""
    import torch
    from gymnasium.wrappers import FlattenObservation
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise
    from tqdm import tqdm

    from edgeaigc.policy.env import EdgePlacementEnv

    class ProgressBar(BaseCallback):
        """A tqdm bar over env steps (SB3's own needs rich, which the extra does not bring)."""

        def __init__(self) -> None:
            super().__init__()
            self.bar = tqdm(total=steps, desc=f"{THEIRS} {scenario.name}", unit="step", disable=not progress)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    torch.set_num_threads(max(1, threads))
    base = EdgePlacementEnv(scenario)
    env = FlattenObservation(base)
    action_size = int(np.prod(env.action_space.shape or (0,)))
    noise = NormalActionNoise(np.zeros(action_size), SB3_ACTION_NOISE_SIGMA * np.ones(action_size))
    model = TD3("MlpPolicy", env, action_noise=noise, buffer_size=max(steps, 1), seed=seed, device="cpu", verbose=0)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=ProgressBar())
    wall = time.monotonic() - started
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / f"{THEIRS}.zip")
    assert isinstance(base.observation_space, spaces.Dict)
    return FlatObservationPolicy(model, base.observation_space, fleet_size(scenario), THEIRS), wall


def shipped_record(scenario: Scenario) -> tuple[Path, dict[str, Any]]:
    """The scenario's own shipped TD3 actor and its metadata (budget, wall time).

    Raises:
        ValueError: no actor trained on this scenario is shipped (the general one was trained on
            other worlds, so its budget is not comparable).
    """
    path = shipped_actors() / f"{scenario.name}-{OURS}.onnx"
    record_path = path.with_suffix(".json")
    if not path.exists() or not record_path.exists():
        raise ValueError(f"no {OURS} actor trained on {scenario.name} is shipped; use --ours train --steps N")
    record = json.loads(record_path.read_text())
    if record.get("scenario") != scenario.name or "total_steps" not in record:
        raise ValueError(f"{record_path} does not record a {scenario.name} training budget; use --ours train")
    return path, record


def train_ours(
    scenario_argument: str, steps: int, seed: int, threads: int, progress: bool, output: Path
) -> tuple[Path, float]:
    """``edgeaigc train`` with its defaults and ``steps`` env steps; the exported actor and wall seconds."""
    from edgeaigc.policy.train import TrainConfig, train

    started = time.monotonic()
    onnx_path = train(
        TrainConfig(
            scenario=scenario_argument, total_steps=steps, seed=seed, threads=threads, progress=progress, output=output
        )
    )
    return onnx_path, time.monotonic() - started


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation over seeds (0 for one seed)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def comparison_rows(
    document: dict[str, Any], per_policy: dict[str, list[Any]], training: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per policy: objective and hit rate (mean, sd over seeds), gap to the oracle, training."""
    oracle = document["policies"].get("oracle", {}).get("objective", {}).get("mean")
    rows = []
    for name, results in per_policy.items():
        objective = np.array([r.metrics["objective"] for r in results])
        hit_rate = np.array([r.metrics["hit_rate"] for r in results])
        mean = float(objective.mean())
        rows.append(
            {
                "policy": name,
                "objective_mean": mean,
                "objective_sd": _sd(objective),
                "hit_rate_mean": float(hit_rate.mean()),
                "hit_rate_sd": _sd(hit_rate),
                "gap_to_oracle": None if oracle is None or name == "oracle" else mean / oracle - 1,
                **training.get(name, {}),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| policy | training steps | training wall time | objective (mean ± sd) | hit rate (mean ± sd) "
        "| gap to oracle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        steps = f"{row['steps']:,}" if "steps" in row else "—"
        wall = f"{row['wall_seconds'] / 60:.1f} min" if "wall_seconds" in row else "—"
        gap = "—" if row["gap_to_oracle"] is None else f"{row['gap_to_oracle']:+.1%}"
        lines.append(
            f"| {row['policy']} | {steps} | {wall} | {row['objective_mean']:.4f} ± {row['objective_sd']:.4f} | "
            f"{row['hit_rate_mean']:.1%} ± {row['hit_rate_sd']:.1%} | {gap} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="traffic-city", help=f"bundled ({', '.join(BUNDLED_SCENARIOS)}) or YAML path"
    )
    parser.add_argument(
        "--ours",
        choices=OURS_CHOICES,
        default="shipped",
        help="shipped: the scenario's shipped TD3 actor, SB3 gets the env steps it was trained for (its "
        "policy/actors/<scenario>-td3.json); train: train ours here with `edgeaigc train`'s defaults and "
        "--steps (default: shipped)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="env steps for each trainer (required with --ours train)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds (default: 5)")
    parser.add_argument("--seed-base", type=int, default=DEFAULT_SEED_BASE, help="first evaluation seed")
    parser.add_argument("--train-seed", type=int, default=1, help="seed of both trainings (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training (default: 1)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the clairvoyant oracle (no gap column)")
    parser.add_argument(
        "--output", type=Path, default=Path("bench-sb3"), help="results and trained models (default: bench-sb3)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 unless ours has the lower mean objective")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if not sb3_available():
        message = f"Stable-Baselines3 is not installed; install the extra: {SB3_INSTALL_HINT}"
        print(f"edgeaigc bench-sb3: {message}", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
        if args.seeds < 1 or args.threads < 1 or (args.steps is not None and args.steps < 1):
            raise ValueError("--seeds, --threads and --steps must be >= 1")
        output: Path = args.output
        training: dict[str, dict[str, Any]] = {}
        if args.ours == "shipped":
            actor_path, record = shipped_record(scenario)
            if args.steps is not None and args.steps != int(record["total_steps"]):
                raise ValueError(
                    f"--steps: the shipped actor was trained for {record['total_steps']}; use --ours train"
                )
            steps = int(record["total_steps"])
            training[OURS] = {"steps": steps, "wall_seconds": float(record["wall_seconds"]), "source": str(actor_path)}
        elif args.steps is None:
            raise ValueError("--ours train needs --steps")
        else:
            steps = args.steps
    except (ScenarioError, ValueError) as error:
        print(f"edgeaigc bench-sb3: {error}", file=sys.stderr)
        return 2
    progress = not args.quiet
    if args.ours == "train":
        actor_path, wall = train_ours(args.scenario, steps, args.train_seed, args.threads, progress, output / "ours")
        training[OURS] = {"steps": steps, "wall_seconds": wall, "source": str(actor_path)}
    theirs, wall = train_sb3(scenario, steps, args.train_seed, args.threads, progress, output)
    training[THEIRS] = {"steps": steps, "wall_seconds": wall, "source": str(output / f"{THEIRS}.zip")}

    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    policies = [OURS, THEIRS, *([] if args.no_oracle else ["oracle"])]
    ours = make_policy(OURS, actor_path, source=str(actor_path))
    document, per_policy = run_benchmark(
        scenario, policies, seeds, progress=progress, given={OURS: ours, THEIRS: theirs}
    )
    rows = comparison_rows(document, per_policy, training)
    ours_objective, theirs_objective = (document["policies"][n]["objective"]["mean"] for n in (OURS, THEIRS))
    winner = OURS if ours_objective < theirs_objective else THEIRS
    verdict = (
        f"{winner} has the lower objective: {OURS} {ours_objective:.4f}, {THEIRS} {theirs_objective:.4f} "
        f"({ours_objective / theirs_objective - 1:+.1%} ours against theirs)"
    )
    lines = [
        f"# {OURS} against Stable-Baselines3's TD3: {scenario.name}",
        "",
        f"Both trained for {steps:,} env steps ({args.threads} torch thread(s)); evaluated on seeds {seeds}, "
        "the same episodes; the objective is -reward per slot (lower is better).",
        "",
        markdown(rows),
        "",
        f"- {verdict}",
        f"- {THEIRS}: MlpPolicy on FlattenObservation (SB3's defaults, Gaussian action noise sigma "
        f"{SB3_ACTION_NOISE_SIGMA}); it serves only a fleet of {scenario.num_nodes} x {scenario.num_models} x "
        f"{scenario.num_cameras}.",
        f"- {OURS}: {training[OURS]['source']}"
        + (
            " (the shipped actor: steps and wall time as recorded when it was trained)"
            if args.ours == "shipped"
            else ""
        )
        + "; its steps include the teacher's warm-up, and its wall time includes its held-out evaluations for "
        "best-actor selection.",
    ]
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps({**document, "comparison": rows, "winner": winner}, indent=2))
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {output / 'results.json'} and results.md")
    if args.check and winner != OURS:
        return 1
    return 0
