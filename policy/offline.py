"""``edgeaigc train --from-recording DIR``: fine-tune an actor offline on the operator's recorded transitions.

TD3+BC (Fujimoto & Gu, *A Minimalist Approach to Offline Reinforcement Learning*, 2021): TD3 on a
fixed dataset, its actor loss ``-lambda Q(s, pi(s)) / mean|Q| + (pi(s) - a)^2`` keeping the actor
near the recorded actions where the critic knows no better (``lambda = alpha``, 2.5 in the paper;
:class:`~edgeaigc.policy.td3.Agent` weighs the BC term by ``1 / alpha`` instead, the same
minimiser). The dataset is a recording (:mod:`.recording`): each transition's observation is
encoded as the operator encoded it, the action is what the plan was projected from (for a
residual actor, its correction of the teacher: ``action - teacher(s)``), the reward the system
model's on the next interval's demand.

Read top to bottom: load the recording and the actor to start from, fill the replay buffer, then
the updates with a counterfactual replay (:mod:`.replay`, what the operator's promotion runs)
every ``--eval-every`` updates; the actor with the best replayed objective is exported as
``candidate.onnx`` (+ ``candidate.json``) with both scores in its metadata. The starting actor is
a contender too, so a fine-tune that finds nothing better hands back the actor it started from,
which the promotion then refuses. The selection reads the same recording the promotion judges on
(there is no other demand to judge on): the promotion's margin is what guards against a lucky fit.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgeaigc.policy.demonstrator import DEFAULT_HORIZON_SLOTS, demonstration_action
from edgeaigc.policy.export import actor_from_onnx, export_actor
from edgeaigc.policy.networks import Actor
from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES, Observation, encode
from edgeaigc.policy.recording import Recording, RecordingError, load_recording
from edgeaigc.policy.replay import Replay, recorded_objective, replay
from edgeaigc.policy.residual import residual_action
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.td3 import Agent, AgentConfig, ReplayBuffer

#: Name of the exported candidate in ``--output``.
CANDIDATE_NAME = "candidate.onnx"


@dataclasses.dataclass
class OfflineConfig:
    """What ``edgeaigc train --from-recording`` accepts."""

    recording: Path
    """Directory of one policy's recording (``<record-dir>/<namespace>/<policy>``)."""
    output: Path
    """Where ``candidate.onnx``, ``candidate.json`` and ``log.csv`` go."""
    init: str | None = None
    """Actor to start from: an exported ``.onnx`` (the ConfigMap's), a ``best.pt``, or ``general``."""
    action_mode: str | None = None
    """``residual`` (a correction of the amortised-myopic teacher, :mod:`.residual`) or ``direct``; an
    ``--init`` actor keeps its own, a fresh one is residual unless told (it starts as the teacher)."""
    updates: int = 2_000
    """Gradient updates of the critic (the actor's every ``policy_delay``)."""
    alpha: float = 2.5
    """TD3+BC's weight of the Q term against behaviour cloning (the BC term is weighted 1 / alpha)."""
    batch_size: int = 64
    eval_every: int = 250
    """Updates between counterfactual replays of the actor on the recording."""
    seed: int = 1
    hidden: int = 64
    """Hidden width of a fresh actor (an ``--init`` actor keeps its own)."""
    threads: int = 1
    max_minutes: float | None = None
    """Stop (and export the best actor so far) after this many minutes."""
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class OfflineResult:
    candidate: Path
    candidate_replay: Replay
    init_replay: Replay | None
    """The ``--init`` actor's (None: a fresh actor)."""
    recorded_objective: float
    transitions: int
    seconds: float


class TorchActorPolicy:
    """A torch actor as a placement policy (the replay's view of the actor being trained)."""

    name = "candidate"

    def __init__(self, actor: Actor, residual: bool, horizon: float) -> None:
        self.actor, self.residual, self.horizon = actor, residual, horizon
        self.scenario: Scenario | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario

    @torch.no_grad()
    def act(self, observation: Observation) -> np.ndarray:
        assert self.scenario is not None
        features = encode(self.scenario, observation)
        action = self.actor(torch.as_tensor(features["pair"]), torch.as_tensor(features["camera"])).numpy()
        if self.residual:
            return residual_action(self.scenario, observation, action, self.horizon)
        return np.asarray(action, np.float32)


def starting_actor(init: str | None, hidden: int) -> tuple[Actor, dict[str, Any]]:
    """The actor to fine-tune and its metadata: from ``init``, or a fresh direct one.

    Raises:
        ValueError: ``init`` cannot be read or is not an actor of this encoder.
    """
    if init is None:
        return Actor(len(PAIR_FEATURES), len(CAMERA_FEATURES), hidden), {}
    if init.endswith(".onnx"):
        if not Path(init).is_file():
            raise ValueError(f"--init: {init} does not exist")
        try:
            return actor_from_onnx(Path(init))
        except ValueError as error:
            raise ValueError(f"--init: {init}: {error}") from error
    from edgeaigc.policy.train import _init_actor

    return _init_actor(init)


def replay_buffer(recording: Recording, residual: bool, horizon: float, seed: int) -> ReplayBuffer:
    """The recorded transitions, encoded; the recorded action doubles as the behaviour-cloning target."""
    scenario = recording.scenario
    first = encode(scenario, recording.observation(0))
    action_dim = recording.arrays["action"].shape[1]
    buffer = ReplayBuffer(len(recording), first["pair"].shape, first["camera"].shape, action_dim, seed=seed)
    for index in range(len(recording)):
        observation = recording.observation(index)
        action = recording.arrays["action"][index].astype(np.float32)
        if residual:  # what the actor would have had to output for the applied action
            teacher = demonstration_action(scenario, observation, horizon)
            action = np.clip(action - teacher, -1.0, 1.0).astype(np.float32)
        buffer.add(
            encode(scenario, observation),
            action,
            float(recording.arrays["reward"][index]),
            encode(scenario, recording.observation(index, "next_")),
            done=False,  # the loop goes on: always bootstrap
            demo_action=action,
        )
    return buffer


def fine_tune(config: OfflineConfig) -> OfflineResult:
    """Fine-tune, export the best actor by counterfactual replay, and return both actors' scores.

    Raises:
        RecordingError: the recording is missing, empty, corrupt or mixes fleets.
        ValueError: bad settings or an ``--init`` actor that cannot be used.
    """
    if min(config.updates, config.batch_size, config.eval_every) < 1 or config.alpha <= 0:
        raise ValueError("--offline-updates, --batch-size and --eval-every must be >= 1, --td3bc-alpha > 0")
    started = time.monotonic()
    recording = load_recording(config.recording)
    actor, init_metadata = starting_actor(config.init, config.hidden)
    action_mode = init_metadata.get("action_mode", "direct") if config.init else config.action_mode or "residual"
    if config.action_mode not in (None, action_mode):
        raise ValueError(f"--init: the actor is {action_mode}, not --action-mode {config.action_mode}")
    residual = action_mode == "residual"
    horizon = float(init_metadata.get("teacher_horizon_slots", DEFAULT_HORIZON_SLOTS))
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    agent = Agent(
        len(PAIR_FEATURES), len(CAMERA_FEATURES), AgentConfig(hidden=actor.hidden, bc_weight=1.0 / config.alpha)
    )
    agent.actor.load_state_dict(actor.state_dict())
    agent.sync_targets()
    buffer = replay_buffer(recording, residual, horizon, config.seed)

    def score() -> Replay:
        return replay(recording, TorchActorPolicy(agent.actor.eval(), residual, horizon))

    # The starting actor is a contender (for a fresh residual one: about the teacher).
    start_replay = score()
    init_replay = start_replay if config.init is not None else None
    best_replay, best_state, best_update = start_replay, copy.deepcopy(agent.actor.state_dict()), 0
    config.output.mkdir(parents=True, exist_ok=True)
    log_rows: list[dict[str, Any]] = []
    bar = tqdm(range(1, config.updates + 1), desc="fine-tune", unit="update", disable=not config.progress)
    metrics: dict[str, float] = {}
    for update in bar:
        agent.actor.train()
        metrics = agent.update(buffer.sample(config.batch_size))
        out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
        if update % config.eval_every == 0 or update == config.updates or out_of_time:
            result = score()
            log_rows.append(
                {"update": update, "objective": result.mean_objective, "hit_rate": result.hit_rate, **metrics}
            )
            if result.mean_objective < best_replay.mean_objective:
                best_replay, best_state, best_update = result, copy.deepcopy(agent.actor.state_dict()), update
            bar.set_postfix(objective=f"{result.mean_objective:.4g}", best=f"{best_replay.mean_objective:.4g}")
        if out_of_time:
            break
    agent.actor.load_state_dict(best_state)
    with (config.output / "log.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sorted({key for row in log_rows for key in row}, key=str))
        writer.writeheader()
        writer.writerows(log_rows)
    recorded = recorded_objective(recording)
    metadata = {
        "scenario": recording.scenario.name,
        "algorithm": "td3",
        "action_mode": "residual" if residual else "direct",
        "teacher_horizon_slots": horizon,
        "offline": {
            "method": "td3+bc",
            "alpha": config.alpha,
            "recording": str(config.recording),
            "fleet": recording.fleet_digest,
            "transitions": len(recording),
            "updates": config.updates,
            "best_update": best_update,
            "init": config.init,
            "counterfactual_objective": best_replay.mean_objective,
            "start_counterfactual_objective": start_replay.mean_objective,
            "recorded_objective": recorded,
        },
    }
    example = encode(recording.scenario, recording.observation(0))
    candidate = export_actor(agent.actor, config.output / CANDIDATE_NAME, example, metadata)
    return OfflineResult(candidate, best_replay, init_replay, recorded, len(recording), time.monotonic() - started)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``edgeaigc train`` that only ``--from-recording`` reads."""
    group = parser.add_argument_group("offline fine-tune from a recording (--from-recording)")
    group.add_argument(
        "--from-recording",
        type=Path,
        default=None,
        metavar="DIR",
        help="fine-tune offline (TD3+BC) on the transitions the operator recorded in DIR "
        "(<record-dir>/<namespace>/<policy>); --init takes the ConfigMap's .onnx actor too",
    )
    group.add_argument(
        "--offline-updates",
        type=int,
        default=OfflineConfig.updates,
        help="gradient updates of the fine-tune (default %(default)s)",
    )
    group.add_argument(
        "--td3bc-alpha",
        type=float,
        default=OfflineConfig.alpha,
        help="TD3+BC's Q weight against behaviour cloning (default and the paper's: %(default)s; lower stays "
        "nearer the recorded actions)",
    )


def run(args: argparse.Namespace) -> int:
    config = OfflineConfig(
        recording=args.from_recording,
        output=args.output or Path("runs") / "from-recording",
        init=args.init,
        action_mode=args.action_mode,
        updates=args.offline_updates,
        alpha=args.td3bc_alpha,
        batch_size=args.batch_size,
        # train's --eval-every counts environment steps (2000); a fine-tune's budget is often below it.
        eval_every=min(args.eval_every, max(1, args.offline_updates // 8)),
        seed=args.seed,
        hidden=args.hidden,
        threads=args.threads,
        max_minutes=args.max_minutes,
        progress=args.progress,
    )
    try:
        result = fine_tune(config)
    except (RecordingError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{result.transitions} recorded transitions; counterfactual objective (lower is better): "
        f"candidate {result.candidate_replay.mean_objective:.5g} (hit rate {result.candidate_replay.hit_rate:.1%})"
        + (
            ""
            if result.init_replay is None
            else f", --init actor {result.init_replay.mean_objective:.5g} (hit rate {result.init_replay.hit_rate:.1%})"
        )
        + f", recorded decisions {result.recorded_objective:.5g}; {result.seconds:.1f} s"
    )
    print(f"wrote {result.candidate}")
    return 0
