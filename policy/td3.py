"""TD3 and DDPG over dict observations, with an optional behaviour-cloning term for demonstrations.

TD3 (Fujimoto et al., 2018) = DDPG + three fixes: twin critics whose minimum forms the target
(clipped double Q-learning), target policy smoothing (clipped noise on the target action) and
delayed actor and target updates. DDPG here is the same agent with one critic, no smoothing
and no delay (:meth:`AgentConfig.as_algorithm`), so the two differ only where the algorithms do.

Demonstrations (optional): transitions whose ``demo_action`` is set came from a teacher
(:mod:`.demonstrator`). The actor loss then adds ``bc_weight * ||pi(s) - a_demo||^2`` over
those transitions, and ``-Q`` is normalised by its mean magnitude as in TD3+BC (Fujimoto & Gu,
2021), so ``bc_weight`` means the same whatever the scale of the returns. With
``bc_weight = 0`` this is plain TD3 / DDPG.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional

from edgeaigc.policy.networks import Actor, QNetwork, TwinCritic

Algorithm = Literal["td3", "ddpg"]
ALGORITHMS: tuple[Algorithm, ...] = ("td3", "ddpg")


@dataclasses.dataclass
class AgentConfig:
    """Hyper-parameters of the agent (not of the training loop)."""

    hidden: int = 64
    """Width of every hidden layer of actor and critics."""
    gamma: float = 0.95
    """Discount factor (a cached model pays its download back over tens of slots)."""
    tau: float = 0.005
    """Soft target update rate."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic(s)."""
    twin_critics: bool = True
    """Two critics, target from their minimum (TD3); one critic (DDPG)."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise (TD3); 0 disables it."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    policy_delay: int = 2
    """Critic updates per actor and target update (TD3: 2, DDPG: 1)."""
    bc_weight: float = 0.0
    """Weight of the behaviour-cloning term on demonstration transitions (0: none)."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before learning."""

    @classmethod
    def for_algorithm(cls, algorithm: Algorithm, **overrides: Any) -> AgentConfig:
        """TD3 defaults, or DDPG's (:meth:`as_algorithm`), then ``overrides``."""
        return dataclasses.replace(cls().as_algorithm(algorithm), **overrides)

    def as_algorithm(self, algorithm: str) -> AgentConfig:
        """These settings for ``algorithm``: as they are for TD3; DDPG has one critic, no target
        smoothing and no delay."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if algorithm == "td3":
            return self
        return dataclasses.replace(self, twin_critics=False, policy_noise=0.0, policy_delay=1)


@dataclasses.dataclass(frozen=True)
class ReplayBatch:
    """A batch of transitions as tensors (observation parts kept apart, as the networks take them)."""

    pair: torch.Tensor  # [B, E, M, P]
    camera: torch.Tensor  # [B, U, C]
    action: torch.Tensor  # [B, A]
    reward: torch.Tensor  # [B]
    next_pair: torch.Tensor
    next_camera: torch.Tensor
    done: torch.Tensor  # [B] 1.0 where the episode terminated (not merely truncated)
    demo_action: torch.Tensor  # [B, A], meaningful where is_demo
    is_demo: torch.Tensor  # [B] 1.0 for teacher transitions


class ReplayBuffer:
    """A ring buffer of transitions with dict observations for one fleet shape.

    Args:
        capacity: number of transitions kept (oldest overwritten).
        pair_shape: ``(E, M, P)``.
        camera_shape: ``(U, C)``.
        action_dim: ``2EM + U``.
        seed: seed of the sampling generator.
    """

    def __init__(
        self,
        capacity: int,
        pair_shape: tuple[int, ...],
        camera_shape: tuple[int, ...],
        action_dim: int,
        seed: int = 0,
    ) -> None:
        self.capacity = int(capacity)
        self.pair = np.zeros((capacity, *pair_shape), np.float32)
        self.camera = np.zeros((capacity, *camera_shape), np.float32)
        self.next_pair = np.zeros_like(self.pair)
        self.next_camera = np.zeros_like(self.camera)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.demo_action = np.zeros((capacity, action_dim), np.float32)
        self.is_demo = np.zeros(capacity, np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.position = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        observation: dict[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        next_observation: dict[str, np.ndarray],
        done: bool,
        demo_action: np.ndarray | None = None,
    ) -> None:
        """Store one transition; ``demo_action`` is the teacher's (noise-free) action, if any."""
        i = self.position
        self.pair[i], self.camera[i] = observation["pair"], observation["camera"]
        self.next_pair[i], self.next_camera[i] = next_observation["pair"], next_observation["camera"]
        self.action[i] = action
        self.reward[i] = reward
        self.done[i] = float(done)
        self.is_demo[i] = float(demo_action is not None)
        self.demo_action[i] = 0.0 if demo_action is None else demo_action
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> ReplayBatch:
        index = self.rng.integers(0, self.size, size=batch_size)

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array[index], device=device)

        return ReplayBatch(
            pair=tensor(self.pair),
            camera=tensor(self.camera),
            action=tensor(self.action),
            reward=tensor(self.reward),
            next_pair=tensor(self.next_pair),
            next_camera=tensor(self.next_camera),
            done=tensor(self.done),
            demo_action=tensor(self.demo_action),
            is_demo=tensor(self.is_demo),
        )

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (only the filled part) and the sampler state."""
        n = self.size
        arrays = ("pair", "camera", "next_pair", "next_camera", "action", "demo_action", "is_demo", "reward", "done")
        state: dict[str, Any] = {name: getattr(self, name)[:n].copy() for name in arrays}
        state.update(position=self.position, size=n, rng=self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        if n > self.capacity or state["pair"].shape[1:] != self.pair.shape[1:]:
            raise ValueError("replay buffer state does not fit this buffer (capacity or fleet shape)")
        for name in (
            "pair",
            "camera",
            "next_pair",
            "next_camera",
            "action",
            "demo_action",
            "is_demo",
            "reward",
            "done",
        ):
            getattr(self, name)[:n] = state[name]
        self.size, self.position = n, int(state["position"]) % self.capacity
        self.rng.bit_generator.state = state["rng"]


class Agent:
    """TD3 or DDPG (see :class:`AgentConfig`) with the permutation-equivariant networks.

    Args:
        pair_features: ``P`` of the observation encoder.
        camera_features: ``C`` of the observation encoder.
        config: hyper-parameters; :meth:`AgentConfig.for_algorithm` gives each algorithm's.
        device: torch device of all networks.
    """

    def __init__(
        self,
        pair_features: int,
        camera_features: int,
        config: AgentConfig | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config or AgentConfig()
        self.device = torch.device(device)
        hidden = self.config.hidden
        self.actor = Actor(pair_features, camera_features, hidden).to(self.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic: TwinCritic | QNetwork
        if self.config.twin_critics:
            self.critic = TwinCritic(pair_features, camera_features, hidden).to(self.device)
        else:
            self.critic = QNetwork(pair_features, camera_features, hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        for target in (self.actor_target, self.critic_target):
            target.requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=self.config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.config.critic_lr)
        self.updates = 0

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Deterministic action for one observation (add exploration noise outside)."""
        pair = torch.as_tensor(observation["pair"], device=self.device)
        camera = torch.as_tensor(observation["camera"], device=self.device)
        return self.actor(pair, camera).cpu().numpy()

    def _q_values(
        self, critic: TwinCritic | QNetwork, pair: torch.Tensor, camera: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """One or two Q estimates, always as a tuple."""
        values = critic(pair, camera, action)
        return values if isinstance(values, tuple) else (values,)

    def update(self, batch: ReplayBatch) -> dict[str, float]:
        """One gradient step of the critic(s) and, every ``policy_delay`` steps, of the actor."""
        config = self.config
        reward = batch.reward * config.reward_scale

        # Target action from the target actor, with target policy smoothing (TD3 only).
        with torch.no_grad():
            next_action = self.actor_target(batch.next_pair, batch.next_camera)
            if config.policy_noise > 0:
                noise = (torch.randn_like(next_action) * config.policy_noise).clamp(
                    -config.noise_clip, config.noise_clip
                )
                next_action = (next_action + noise).clamp(-1.0, 1.0)
            # Clipped double Q-learning: the smaller of the twin target critics (TD3).
            next_q = torch.min(
                torch.stack(self._q_values(self.critic_target, batch.next_pair, batch.next_camera, next_action)),
                dim=0,
            ).values
            # Truncation is not termination: bootstrap unless the episode really ended.
            target_q = reward + config.gamma * (1.0 - batch.done) * next_q

        # Critic regression onto the shared target.
        q_values = self._q_values(self.critic, batch.pair, batch.camera, batch.action)
        critic_loss = sum((functional.mse_loss(q, target_q) for q in q_values), torch.tensor(0.0))
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        self.updates += 1
        metrics = {"critic_loss": critic_loss.item(), "q": q_values[0].detach().mean().item()}

        # Delayed policy update (TD3: every policy_delay critic steps; DDPG: every step).
        if self.updates % config.policy_delay == 0:
            action = self.actor(batch.pair, batch.camera)
            q = self._q_values(self.critic, batch.pair, batch.camera, action)[0]
            # TD3+BC normalisation: the Q term is scale-free, so bc_weight keeps its meaning.
            actor_loss = -q.mean() / q.abs().mean().detach().clamp_min(1e-6)
            if config.bc_weight > 0 and float(batch.is_demo.sum()) > 0:
                squared_error = ((action - batch.demo_action) ** 2).mean(dim=1)
                bc_loss = (squared_error * batch.is_demo).sum() / batch.is_demo.sum()
                actor_loss = actor_loss + config.bc_weight * bc_loss
                metrics["bc_loss"] = bc_loss.item()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            metrics["actor_loss"] = actor_loss.item()

            # Soft (Polyak) update of the target networks.
            self._soft_update(self.actor, self.actor_target)
            self._soft_update(self.critic, self.critic_target)
        return metrics

    def behaviour_cloning_step(self, batch: ReplayBatch) -> float:
        """One supervised step of the actor towards the demonstrations in ``batch`` (pre-training)."""
        if float(batch.is_demo.sum()) == 0:
            return 0.0
        action = self.actor(batch.pair, batch.camera)
        squared_error = ((action - batch.demo_action) ** 2).mean(dim=1)
        loss = (squared_error * batch.is_demo).sum() / batch.is_demo.sum()
        self.actor_optimizer.zero_grad()
        loss.backward()
        self.actor_optimizer.step()
        return loss.item()

    def sync_targets(self) -> None:
        """Copy the online networks into the targets (after pre-training)."""
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())

    def _soft_update(self, source: torch.nn.Module, target: torch.nn.Module) -> None:
        with torch.no_grad():
            for param, target_param in zip(source.parameters(), target.parameters(), strict=True):
                target_param.lerp_(param, self.config.tau)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "actor": self.actor.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.updates = int(state["updates"])
