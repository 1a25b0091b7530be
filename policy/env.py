"""``edgeaigc/EdgePlacement-v0``: the EdgeAIGC system model as a Gymnasium environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgeaigc.policy.demand import DemandGenerator, EpisodeTrace
from edgeaigc.policy.observation import (
    CAMERA_FEATURES,
    PAIR_FEATURES,
    TREND_WINDOW_SLOTS,
    Observation,
    encode,
    feature_bounds,
)
from edgeaigc.policy.plan import action_size, is_feasible, plan_for
from edgeaigc.policy.scenario import Scenario, load_scenario
from edgeaigc.policy.system_model import Plan, SlotOutcome, evaluate_slot


class EdgePlacementEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Model caching and resource allocation for a fleet of traffic cameras (EdgeAIGC).

    One step is one decision slot (``scenario.slot_seconds``). The policy sees what was
    measured in the slot that just ended and decides the plan for the next one; that slot's
    requests (unknown when deciding) are then served under the plan.

    ## Action space
    ``Box(-1, 1, (2*E*M + U,), float32)``: a cache score per (node, model), a compute-share
    tilt per (node, model) and a bandwidth-share tilt per camera (see :mod:`.plan`). Every
    action is projected onto a feasible plan; 0 tilts mean "optimal shares for the measured
    load".

    ## Observation space
    ``Dict(pair=Box(E, M, P), camera=Box(U, C))`` from :func:`~edgeaigc.policy.observation.encode`
    (feature names in ``PAIR_FEATURES`` and ``CAMERA_FEATURES``). The raw
    :class:`~edgeaigc.policy.observation.Observation` is ``env.unwrapped.observation``.

    ## Reward
    ``-(alpha * mean_response_time / t_ref + beta * cost_per_request / c_ref)`` of the slot,
    cost including downloads of newly cached models.

    ## Episode end
    Never terminates; truncated after ``scenario.episode_slots`` slots. ``info`` carries the
    slot's ``hit_rate``, ``mean_response_time_s`` and ``cost`` (and more), so any agent can be
    scored like ours.
    """

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012  (Gymnasium declares it a plain dict)

    def __init__(
        self,
        scenario: str | Path | Scenario = "traffic-city",
        *,
        episode_slots: int | None = None,
        churn_limit: int | None = None,
        switching_horizon_slots: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if episode_slots is not None:
            self.scenario = self.scenario.with_overrides(episode_slots=int(episode_slots))
        self.churn_limit = churn_limit
        self.switching_horizon_slots = switching_horizon_slots
        self.render_mode = render_mode
        self.demand = DemandGenerator(self.scenario)
        E, M, U = self.scenario.num_nodes, self.scenario.num_models, self.scenario.num_cameras
        bound = feature_bounds()
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "pair": spaces.Box(-bound, bound, (E, M, len(PAIR_FEATURES)), np.float32),
                "camera": spaces.Box(-bound, bound, (U, len(CAMERA_FEATURES)), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (action_size(self.scenario),), np.float32)
        self.trace: EpisodeTrace | None = None
        self.slot = 0
        self.cache = np.zeros((E, M))
        self.observation: Observation | None = None
        self.last_plan: Plan | None = None
        self.last_outcome: SlotOutcome | None = None
        self._utilisation = np.zeros(E)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.trace = self.demand.episode(self.np_random)
        self.slot = 1
        self.cache = np.zeros((self.scenario.num_nodes, self.scenario.num_models))
        self._utilisation = np.zeros(self.scenario.num_nodes)
        self.last_plan, self.last_outcome = None, None
        self.observation = self._observe()
        return encode(self.scenario, self.observation), {}

    def _observe(self) -> Observation:
        """Measurements of the slot that just ended (``self.slot - 1``)."""
        assert self.trace is not None
        last = self.slot - 1
        window = self.trace.counts[max(0, last - TREND_WINDOW_SLOTS + 1) : last + 1]
        return Observation(
            camera_rates=self.trace.counts[last],
            camera_rates_recent_mean=window.mean(axis=0),
            link_quality=self.trace.link_quality[last],
            cache=self.cache.copy(),
            node_compute_utilisation=self._utilisation.copy(),
            hour_of_day=float(self.trace.hour_of_day[self.slot]),
        )

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.trace is None or self.observation is None:
            raise RuntimeError("call reset() before step()")
        return self.step_plan(
            plan_for(self.scenario, self.observation, action, self.churn_limit, self.switching_horizon_slots)
        )

    def step_plan(self, plan: Plan) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Serve the next slot under an explicit plan (must be feasible; see :func:`is_feasible`).

        For policies that compute plans themselves, such as the clairvoyant oracle, whose
        shares are optimal for demand no online policy can measure yet.
        """
        if self.trace is None or self.observation is None:
            raise RuntimeError("call reset() before step_plan()")
        if self.slot > self.trace.num_slots:
            raise RuntimeError("the episode is over (truncated); call reset()")
        if not is_feasible(self.scenario, plan):
            raise ValueError("plan violates storage or share constraints")
        outcome = evaluate_slot(
            self.scenario,
            plan,
            self.trace.counts[self.slot],
            self.trace.link_quality[self.slot],
            self.cache,
        )
        self.cache = plan.cache
        self._utilisation = outcome.node_compute_utilisation
        self.last_plan, self.last_outcome = plan, outcome
        truncated = self.slot >= self.trace.num_slots
        self.slot += 1
        if not truncated:
            self.observation = self._observe()
        info = {
            "hit_rate": outcome.hit_rate,
            "mean_response_time_s": outcome.mean_response_time_s,
            "cost": outcome.cost,
            "requests": outcome.requests,
            "hits": outcome.hits,
            "slo_violations": outcome.slo_violations,
            "downloads": outcome.downloads,
            "backhaul_download_mb": outcome.backhaul_download_mb,
            "peer_download_mb": outcome.peer_download_mb,
            "response_time_histogram": outcome.response_time_histogram,
        }
        return encode(self.scenario, self.observation), outcome.reward, False, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self.last_outcome is None:
            return f"slot {self.slot}: no decision yet"
        o = self.last_outcome
        return (
            f"slot {self.slot - 1}: hit rate {o.hit_rate:.1%}, mean rt {o.mean_response_time_s * 1000:.0f} ms, "
            f"cost {o.cost:.4f}, downloads {o.downloads}"
        )
