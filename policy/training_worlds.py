"""The worlds a training run plays: one scenario, or a rotating pool drawn from a scenario family.

A replay buffer holds one fleet shape (its arrays are ``[E, M, P]`` per row), so worlds of a
family keep one buffer each, and a batch is drawn from one world at a time (chosen with
probability proportional to what it holds): the networks are shape-free, the batches are not.
The pool holds :attr:`TrainingWorlds.pool_size` worlds; each new episode either starts in a new
world (drawn from a training seed, :func:`~edgeaigc.policy.scenario_family.training_seed`; the
oldest world and its buffer leave the pool) or replays one already in the pool.

Validation worlds (:data:`~edgeaigc.policy.scenario_family.VALIDATION_SEEDS`) lie below the
training seeds, and held-out families above both.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import numpy as np

from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.scenario_family import VALIDATION_SEEDS, FamilyRanges, draw_scenario, training_seed
from edgeaigc.policy.td3 import ReplayBatch, ReplayBuffer

#: Upper bound on one replay buffer's memory (its capacity shrinks for very large fleets).
MAX_REPLAY_BYTES = 4 * 2**30


def replay_buffer_for(env: EdgePlacementEnv, capacity: int, seed: int) -> ReplayBuffer:
    """A buffer for ``env``'s fleet shape, within :data:`MAX_REPLAY_BYTES` (two observations a row)."""
    # The env's spaces are Boxes of fixed shapes (the Space base class types them as optional).
    spaces = cast(dict[str, Any], env.observation_space.spaces)  # type: ignore[attr-defined]
    pair_shape = cast(tuple[int, ...], spaces["pair"].shape)
    camera_shape = cast(tuple[int, ...], spaces["camera"].shape)
    action_size = int(np.prod(cast(tuple[int, ...], env.action_space.shape)))
    row_bytes = 4 * (2 * (int(np.prod(pair_shape)) + int(np.prod(camera_shape))) + 2 * action_size + 3)
    return ReplayBuffer(int(min(capacity, MAX_REPLAY_BYTES // row_bytes)), pair_shape, camera_shape, action_size, seed)


@dataclasses.dataclass
class World:
    """One scenario being trained on: its environment and its transitions."""

    scenario: Scenario
    env: EdgePlacementEnv
    buffer: ReplayBuffer
    normalise_rewards: bool = False
    """Divide rewards by their running mean magnitude in this world (family runs: worlds' objectives
    differ by orders of magnitude, and one critic must fit them all)."""
    _magnitude_sum: float = 0.0
    _count: int = 0

    def learning_reward(self, reward: float) -> float:
        """The reward stored for learning (normalised by the world's running mean magnitude if asked)."""
        if not self.normalise_rewards:
            return reward
        self._magnitude_sum += abs(reward)
        self._count += 1
        return reward / max(self._magnitude_sum / self._count, 1e-9)


class TrainingWorlds:
    """Where the next training episode is played, and where replay batches come from.

    Args:
        scenario: train on this one scenario (``ranges`` None), one world for the whole run.
        ranges: train on worlds drawn from these ranges instead.
        capacity: replay capacity of the single world, or of each pooled world.
        pool_size: worlds kept at once (family only).
        new_world_probability: chance an episode starts in a newly drawn world (family only).
        episode_slots: episode length of drawn worlds.
        seed: seed of the buffers' samplers.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        ranges: FamilyRanges | None = None,
        *,
        capacity: int,
        pool_size: int = 12,
        new_world_probability: float = 0.5,
        episode_slots: int = 120,
        seed: int = 0,
    ) -> None:
        if (scenario is None) == (ranges is None):
            raise ValueError("train on a scenario or on a family, not both or neither")
        self.ranges = ranges
        self.capacity = capacity
        self.pool_size = pool_size
        self.new_world_probability = new_world_probability
        self.episode_slots = episode_slots
        self.seed = seed
        self.worlds: list[World] = []
        self.worlds_drawn = 0
        if scenario is not None:
            self.worlds.append(self._world(scenario))

    def _world(self, scenario: Scenario) -> World:
        env = EdgePlacementEnv(scenario)
        buffer = replay_buffer_for(env, self.capacity, self.seed + len(self.worlds))
        return World(scenario, env, buffer, normalise_rewards=self.ranges is not None)

    @property
    def single(self) -> World | None:
        """The one world of a single-scenario run (None for a family)."""
        return self.worlds[0] if self.ranges is None else None

    def next_world(self, rng: np.random.Generator) -> World:
        """The world the next episode is played in (a new one is drawn from a training seed)."""
        if self.ranges is None:
            return self.worlds[0]
        if not self.worlds or rng.random() < self.new_world_probability:
            seed = training_seed(rng)
            scenario = draw_scenario(seed, self.ranges, episode_slots=self.episode_slots)
            self.worlds.append(self._world(scenario))
            self.worlds_drawn += 1
            if len(self.worlds) > self.pool_size:
                self.worlds.pop(0)
            return self.worlds[-1]
        return self.worlds[int(rng.integers(0, len(self.worlds)))]

    def __len__(self) -> int:
        return sum(len(world.buffer) for world in self.worlds)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """A batch from one world, chosen with probability proportional to its transitions."""
        sizes = np.array([len(world.buffer) for world in self.worlds], float)
        world = self.worlds[int(rng.choice(len(self.worlds), p=sizes / sizes.sum()))]
        return world.buffer.sample(batch_size)


def validation_worlds(ranges: FamilyRanges, episode_slots: int) -> list[EdgePlacementEnv]:
    """The fixed worlds a family run is evaluated on (never trained on)."""
    return [
        EdgePlacementEnv(draw_scenario(seed, ranges, name=f"validation-{seed}", episode_slots=episode_slots))
        for seed in VALIDATION_SEEDS
    ]
