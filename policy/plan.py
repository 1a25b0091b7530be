"""Turn any action into a feasible plan: storage knapsack, shares summing to at most 1.

The action of every policy, learned or not, is the same vector in ``[-1, 1]``:
``[cache score x E*M | compute tilt E*M | bandwidth tilt U]`` (:func:`split_action`).

- Caching: on each node, models with a positive score are taken in order of score while they
  fit the node's storage (and, with a churn limit, while few enough of them are new).
- Switching cost (with a horizon of ``h > 0`` slots, :func:`stable_cache`): each model the
  scores add to a node is a move, made only when the system model predicts that its gain over
  ``h`` slots exceeds what it costs — the download price and the gain forgone while the model
  downloads (:func:`~edgeaigc.policy.system_model.switching_cost`). A move evicts, lowest score
  first, only models the scores dropped; a model the scores drop leaves on its own only if the
  node serves no worse without it. Demand noise and near-ties therefore leave the placement
  alone, while a shift in demand that pays for the download still moves it.
- Shares: the optimal shares for the *measured* load (the larger of the last slot's and the
  recent mean rate) (water-filling, see
  :func:`~edgeaigc.policy.system_model.optimal_shares`) tilted by ``exp(TILT * action)`` and
  mixed with a small uniform floor so a cached model or camera whose demand was zero last slot
  is not starved. An action of 0 therefore means "optimal for what was measured".

Whatever the action, the result satisfies every constraint (tested by property tests), so an
infeasible plan never leaves the policy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    Plan,
    node_cache_objective,
    node_rates_of,
    optimal_bandwidth_shares,
    optimal_compute_shares,
    switching_cost,
)

#: How far an action of +-1 can move a share away from the measured optimum (factor e**TILT).
TILT = 1.5
#: Fraction of each resource spread evenly over its users (cached models, cameras).
UNIFORM_FLOOR = 0.05
#: Storage slack when checking that a cache fits (sizes are summed in a different order than in select_cache).
_STORAGE_SLACK_MB = 1e-9


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


def stable_cache(
    scenario: Scenario,
    cache_score: np.ndarray,
    proposed: np.ndarray,
    previous_cache: np.ndarray,
    node_rates: np.ndarray,
    horizon_slots: float,
) -> np.ndarray:
    """The moves from ``previous_cache`` towards ``proposed`` that pay for their switching cost.

    On each node, the models ``proposed`` drops are tried one at a time (lowest score first),
    then the models it adds (highest score first): a try evicts the model, or adds it to the
    cache kept so far, evicting models ``proposed`` dropped (lowest score first) while it does
    not fit. An addition is accepted when the slot objective's gain
    (:func:`~edgeaigc.policy.system_model.node_cache_objective` under ``node_rates``, optimal
    compute shares) times ``horizon_slots`` exceeds its
    :func:`~edgeaigc.policy.system_model.switching_cost`, an eviction when the objective is no
    worse without the model (it costs nothing to switch). A node whose previous cache no longer
    fits its storage takes ``proposed`` as it is. The result fits every node (``proposed`` does,
    and a try evicts only models outside it) and adds nothing ``proposed`` does not.

    Args:
        cache_score: the scores ``proposed`` was selected by, ``[E, M]``.
        proposed: the cache the scores select, ``[E, M]`` in {0, 1}.
        previous_cache: the cache now, ``[E, M]`` in {0, 1}.
        node_rates: request rates to plan for, ``[E, M]``.
        horizon_slots: slots over which a move's gain must repay its cost.
    """
    E, M = proposed.shape
    size, storage = scenario.model_size_mb, scenario.node_storage_mb
    wanted = proposed > 0
    previous = previous_cache > 0
    previous_fits = (previous * size).sum(axis=1) <= storage + _STORAGE_SLACK_MB
    current = np.where(previous_fits[:, None], previous, wanted)
    total_rate = float(node_rates.sum())
    nodes = np.arange(E)

    # Each node's objective is its own (its compute shares are optimised per node), so the one of
    # ``current`` is kept and updated where a move is accepted rather than computed again with every
    # candidate, and a candidate is evaluated on the nodes trying it only: at 1000 nodes x 50 models
    # each evaluation of every node takes ~50 ms.
    current_objective = node_cache_objective(scenario, current.astype(float), node_rates, total_rate)

    def move(
        candidate: np.ndarray, accept: Callable[[np.ndarray, np.ndarray], np.ndarray], trying: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``current`` and its objective after the nodes ``trying`` moved to ``candidate`` where
        ``accept(gain over the horizon, cost)``."""
        # Only the nodes trying a move: after the first ranks, few nodes have another model to try.
        rows = np.flatnonzero(trying)
        objective = current_objective.copy()
        if rows.size:
            part = scenario if rows.size == E else scenario.for_nodes(rows)
            objective[rows] = node_cache_objective(part, candidate[rows].astype(float), node_rates[rows], total_rate)
        gain = current_objective - objective
        cost = switching_cost(scenario, candidate, current, gain, total_rate)
        moved = trying & accept(gain * horizon_slots, cost)
        return np.where(moved[:, None], candidate, current), np.where(moved, objective, current_objective)

    # Evictions first, lowest score first. They cost no download, so one is made unless the node
    # serves worse without the model: a model without measured demand leaves (should its demand
    # come back, a share left to it by the uniform floor would serve it slowly), and so does one a
    # compute-bound node serves better from the cloud.
    dropped = current & ~wanted
    dropped_order = np.argsort(np.where(dropped, cache_score, np.inf), axis=1, kind="stable")
    dropped_per_node = dropped.sum(axis=1)
    for rank in range(int(dropped_per_node.max(initial=0))):
        trying = rank < dropped_per_node
        model = dropped_order[:, rank]
        candidate = current.copy()
        candidate[nodes[trying], model[trying]] = False
        current, current_objective = move(candidate, np.greater_equal, trying)

    # Then additions, highest score first, each making room by evicting dropped models.
    additions = wanted & ~current
    added_order = np.argsort(np.where(additions, -cache_score, np.inf), axis=1, kind="stable")
    additions_per_node = additions.sum(axis=1)
    for rank in range(int(additions_per_node.max(initial=0))):
        trying = rank < additions_per_node
        model = added_order[:, rank]
        candidate = current.copy()
        candidate[nodes[trying], model[trying]] = True
        evictable = candidate & ~wanted
        free = storage - (candidate * size).sum(axis=1)
        eviction_order = np.argsort(np.where(evictable, cache_score, np.inf), axis=1, kind="stable")
        for position in range(M):
            short = trying & (free < -_STORAGE_SLACK_MB)
            if not short.any():
                break
            victim = eviction_order[:, position]
            evict = short & evictable[nodes, victim]
            candidate[nodes[evict], victim[evict]] = False
            free += np.where(evict, size[victim], 0.0)
        current, current_objective = move(candidate, np.greater, trying)
    return current.astype(float)


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
    switching_horizon_slots: float = 0.0,
) -> Plan:
    """Project an action onto a feasible :class:`Plan` using the measured demand.

    With ``switching_horizon_slots > 0`` a change of cache is kept only where it pays for its
    switching cost over that many slots (:func:`stable_cache`); 0 takes the scores' cache as it is.
    """
    cache_score, compute_tilt, bandwidth_tilt = split_action(scenario, action)
    cache = select_cache(scenario, cache_score, observation.cache, churn_limit)
    # Plan for the larger of the last slot and the recent mean: one quiet slot (Poisson noise
    # at low rates) must not starve a cached model of compute or a camera of bandwidth.
    planning_rates = np.maximum(observation.camera_rates, observation.camera_rates_recent_mean)
    node_rates = node_rates_of(scenario, planning_rates)
    if switching_horizon_slots > 0:
        # A move's gain over the horizon is judged on the recent mean: the larger-of-two planning
        # rates above are biased up by one slot's noise, which would make near-ties look like gains.
        expected_rates = node_rates_of(scenario, observation.camera_rates_recent_mean)
        cache = stable_cache(scenario, cache_score, cache, observation.cache, expected_rates, switching_horizon_slots)
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
