"""Turn any action into a feasible plan: storage knapsack, shares summing to at most 1.

The action of every policy, learned or not, is the same vector in ``[-1, 1]``:
``[cache score x E*M | compute tilt E*M | bandwidth tilt U]`` (:func:`split_action`).

- Caching: on each node, models with a positive score are taken in order of score while they
  fit the node's storage (and, with a churn limit, while few enough of them are new).
- Shares: the optimal shares for the *measured* load (the larger of the last slot's and the
  recent mean rate) (water-filling, see
  :func:`~edgeaigc.policy.system_model.optimal_shares`) tilted by ``exp(TILT * action)`` and
  mixed with a small uniform floor so a cached model or camera whose demand was zero last slot
  is not starved. An action of 0 therefore means "optimal for what was measured".

Whatever the action, the result satisfies every constraint (tested by property tests), so an
infeasible plan never leaves the policy.
"""

from __future__ import annotations

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    Plan,
    node_rates_of,
    optimal_bandwidth_shares,
    optimal_compute_shares,
)

#: How far an action of +-1 can move a share away from the measured optimum (factor e**TILT).
TILT = 1.5
#: Fraction of each resource spread evenly over its users (cached models, cameras).
UNIFORM_FLOOR = 0.05


def action_size(scenario: Scenario) -> int:
    return 2 * scenario.num_nodes * scenario.num_models + scenario.num_cameras


def split_action(scenario: Scenario, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cache_score[E, M], compute_tilt[E, M], bandwidth_tilt[U])`` from a flat action."""
    E, M = scenario.num_nodes, scenario.num_models
    action = np.clip(np.nan_to_num(np.asarray(action, float).reshape(-1), nan=0.0), -1.0, 1.0)
    if action.size != action_size(scenario):
        raise ValueError(f"action has {action.size} values, expected 2*E*M+U = {action_size(scenario)}")
    return action[: E * M].reshape(E, M), action[E * M : 2 * E * M].reshape(E, M), action[2 * E * M :]


def join_action(cache_score: np.ndarray, compute_tilt: np.ndarray, bandwidth_tilt: np.ndarray) -> np.ndarray:
    return np.concatenate([cache_score.ravel(), compute_tilt.ravel(), bandwidth_tilt.ravel()]).astype(np.float32)


def action_for_cache(scenario: Scenario, cache: np.ndarray) -> np.ndarray:
    """The action that asks for exactly ``cache`` with measured-optimal shares."""
    E, M, U = scenario.num_nodes, scenario.num_models, scenario.num_cameras
    score = np.where(cache > 0, 1.0, -1.0)
    return join_action(score, np.zeros((E, M)), np.zeros(U))


def select_cache(
    scenario: Scenario,
    cache_score: np.ndarray,
    previous_cache: np.ndarray,
    churn_limit: int | None = None,
) -> np.ndarray:
    """Greedy knapsack by score on each node; at most ``churn_limit`` new models per node."""
    E, M = cache_score.shape
    cache = np.zeros((E, M))
    order = np.argsort(-cache_score, axis=1, kind="stable")
    free = scenario.node_storage_mb.astype(float).copy()
    added = np.zeros(E, dtype=np.int64)
    nodes = np.arange(E)
    limit = np.iinfo(np.int64).max if churn_limit is None else churn_limit
    # All nodes at once, one rank position at a time (the greedy is sequential within a node).
    for rank in range(M):
        model = order[:, rank]
        size = scenario.model_size_mb[model]
        is_new = previous_cache[nodes, model] <= 0
        take = (cache_score[nodes, model] > 0) & (size <= free) & ~(is_new & (added >= limit))
        cache[nodes[take], model[take]] = 1.0
        free -= np.where(take, size, 0.0)
        added += take & is_new
    return cache


def _tilt(base: np.ndarray, tilt: np.ndarray, users: np.ndarray, group: np.ndarray, num_groups: int) -> np.ndarray:
    """Tilt shares by ``exp(TILT * tilt)``, add the uniform floor, renormalise per group."""
    weights = np.where(users, base * np.exp(TILT * tilt), 0.0)
    total = np.bincount(group, weights=weights, minlength=num_groups)
    count = np.bincount(group, weights=users.astype(float), minlength=num_groups)
    normalised = np.divide(weights, total[group], out=np.zeros_like(weights), where=total[group] > 0)
    uniform = np.divide(users.astype(float), count[group], out=np.zeros_like(weights), where=count[group] > 0)
    # A group whose users had no measured load gets the uniform split alone.
    floor = np.where(total[group] > 0, UNIFORM_FLOOR, 1.0)
    return np.where(users, (1 - floor) * normalised + floor * uniform, 0.0)


def plan_for(
    scenario: Scenario,
    observation: Observation,
    action: np.ndarray,
    churn_limit: int | None = None,
) -> Plan:
    """Project an action onto a feasible :class:`Plan` using the measured demand."""
    cache_score, compute_tilt, bandwidth_tilt = split_action(scenario, action)
    cache = select_cache(scenario, cache_score, observation.cache, churn_limit)
    # Plan for the larger of the last slot and the recent mean: one quiet slot (Poisson noise
    # at low rates) must not starve a cached model of compute or a camera of bandwidth.
    planning_rates = np.maximum(observation.camera_rates, observation.camera_rates_recent_mean)
    node_rates = node_rates_of(scenario, planning_rates)
    E, M = cache.shape
    base_compute = optimal_compute_shares(scenario, cache, node_rates)
    compute = _tilt(
        base_compute.ravel(), compute_tilt.ravel(), cache.ravel() > 0, np.repeat(np.arange(E), M), E
    ).reshape(E, M)
    base_bandwidth = optimal_bandwidth_shares(scenario, planning_rates, observation.link_quality)
    cameras = np.ones(scenario.num_cameras, dtype=bool)
    bandwidth = _tilt(base_bandwidth, bandwidth_tilt, cameras, scenario.camera_node, E)
    return Plan(cache=cache, compute_share=compute, bandwidth_share=bandwidth)


def is_feasible(scenario: Scenario, plan: Plan, atol: float = 1e-9) -> bool:
    """Every constraint of DESIGN §3 holds."""
    cache = plan.cache
    storage_ok = np.all((cache * scenario.model_size_mb).sum(axis=1) <= scenario.node_storage_mb + atol)
    binary_ok = np.all((cache == 0) | (cache == 1))
    compute_ok = (
        np.all(plan.compute_share >= 0)
        and np.all(plan.compute_share[cache == 0] == 0)
        and np.all(plan.compute_share.sum(axis=1) <= 1 + atol)
    )
    per_node_bandwidth = np.bincount(scenario.camera_node, weights=plan.bandwidth_share, minlength=scenario.num_nodes)
    bandwidth_ok = np.all(plan.bandwidth_share >= 0) and np.all(per_node_bandwidth <= 1 + atol)
    return bool(storage_ok and binary_ok and compute_ok and bandwidth_ok)
