"""A cheap hand-made teacher for TD3's warm-up: amortised myopic caching by local search.

Early in training a random actor caches almost nothing useful and thrashes, so the replay
buffer learns little. Instead the warm-up (and a share of later episodes) follows this
teacher: for the demand just measured, the cache minimising the slot objective with optimal
compute shares (:func:`~edgeaigc.policy.system_model.node_cache_objective`) plus the
download cost of newly cached models *spread over* ``horizon_slots`` slots — a model fetched
now serves many slots, which the one-slot myopic optimizer ignores and so rarely caches.

On each node it scores every feasible subset of the models with demand there or already
cached (:func:`feasible_caches`), when there are at most :data:`MAX_ENUMERATED` of them;
larger fleets fall back to local search from the current cache (the best improving flip of
one or two models, repeated), so it runs on any fleet. It is a teacher, not a baseline.

numpy only (it runs inside training, never in the operator, but it needs no torch).
"""

from __future__ import annotations

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import join_action
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    download_cost,
    node_cache_objective,
    node_rates_of,
    objective_weights,
)

#: Download cost is divided by this many slots (the expected stay of a cached model).
DEFAULT_HORIZON_SLOTS = 20.0
#: Cache score the teacher's action gives a model it wants (minus that for one it does not).
#: Below 1 so that an actor imitating it keeps tanh out of saturation.
DEMONSTRATION_SCORE = 0.5
#: Above this many feasible caches on a node, local search replaces enumeration.
MAX_ENUMERATED = 4096
#: Relative improvement a move must bring to be taken (stops ties from cycling).
_MIN_GAIN = 1e-9


def feasible_caches(sizes: np.ndarray, capacity: float, candidates: np.ndarray, limit: int) -> np.ndarray | None:
    """Every subset of the ``candidates`` mask that fits ``capacity``, ``bool[S, M]`` (row 0 empty).

    ``None`` when there are more than ``limit``.
    """
    subsets = np.zeros((1, sizes.size), dtype=bool)
    free = np.array([float(capacity)])
    for model in np.flatnonzero(candidates):
        fits = sizes[model] <= free
        grown = subsets[fits]
        grown[:, model] = True
        subsets = np.concatenate([subsets, grown])
        free = np.concatenate([free, free[fits] - sizes[model]])
        if len(subsets) > limit:
            return None
    return subsets


def _moves(num_models: int) -> np.ndarray:
    """Every single-model flip and every two-model flip, as a mask ``bool[K, M]``."""
    flips = np.eye(num_models, dtype=bool)
    first, second = np.triu_indices(num_models, k=1)
    return np.concatenate([np.zeros((1, num_models), dtype=bool), flips, flips[first] | flips[second]])


def demonstration_cache(
    scenario: Scenario,
    observation: Observation,
    horizon_slots: float = DEFAULT_HORIZON_SLOTS,
    max_moves: int = 32,
    smoothed: bool = False,
) -> np.ndarray:
    """The teacher's cache ``x[E, M]`` for the demand measured in ``observation``.

    Args:
        scenario: the fleet.
        observation: what was measured; its ``cache`` is the reference for downloads and the
            starting point of the local search.
        horizon_slots: number of slots a download is amortised over.
        max_moves: bound on improving moves of the local search.
        smoothed: plan for the recent mean rates (``TREND_WINDOW_SLOTS``) instead of the last
            slot's, which at low request rates are mostly Poisson noise.
    """
    E, M = scenario.num_nodes, scenario.num_models
    rates = observation.camera_rates_recent_mean if smoothed else observation.camera_rates
    node_rates = node_rates_of(scenario, rates)
    total_rate = float(node_rates.sum())
    if total_rate <= 0:
        return observation.cache.copy()
    _, cost_weight = objective_weights(scenario, total_rate)
    download_weight = float(cost_weight) / horizon_slots
    previous = observation.cache > 0
    sizes, storage = scenario.model_size_mb, scenario.node_storage_mb

    def value(candidates: np.ndarray) -> np.ndarray:
        """Amortised objective of candidate caches ``[K, E, M]``, ``+inf`` where they do not fit."""
        objective = node_cache_objective(scenario, candidates.astype(float), node_rates, total_rate)
        objective = objective + download_weight * download_cost(scenario, candidates, observation.cache)
        fits = candidates.astype(float) @ sizes <= storage + 1e-9
        return np.where(fits, objective, np.inf)

    subsets = [feasible_caches(sizes, storage[e], (node_rates[e] > 0) | previous[e], MAX_ENUMERATED) for e in range(E)]
    if all(rows is not None for rows in subsets):
        # Exact: every node's feasible subsets, padded to one batch (padding rows are empty).
        depth = max(len(rows) for rows in subsets if rows is not None)
        batch = np.zeros((depth, E, M), dtype=bool)
        valid = np.zeros((depth, E), dtype=bool)
        for e, rows in enumerate(subsets):
            assert rows is not None
            batch[: len(rows), e] = rows
            valid[: len(rows), e] = True
        scores = np.where(valid, value(batch), np.inf)
        return batch[scores.argmin(axis=0), np.arange(E)].astype(float)

    moves = _moves(M) if M <= 24 else _moves(M)[: M + 1]
    cache = previous.copy()
    current = value(cache[None])[0]
    for _ in range(max_moves):
        candidates = cache[None, :, :] ^ moves[:, None, :]  # [K, E, M]
        scores = value(candidates)
        best = scores.argmin(axis=0)
        best_score = scores[best, np.arange(E)]
        improves = best_score < current - _MIN_GAIN * np.abs(current)
        if not improves.any():
            break
        cache = np.where(improves[:, None], candidates[best, np.arange(E)], cache)
        current = np.where(improves, best_score, current)
    return cache.astype(float)


def demonstration_action(
    scenario: Scenario,
    observation: Observation,
    horizon_slots: float = DEFAULT_HORIZON_SLOTS,
    smoothed: bool = False,
) -> np.ndarray:
    """The teacher's flat action: ``+-DEMONSTRATION_SCORE`` cache scores, zero tilts."""
    cache = demonstration_cache(scenario, observation, horizon_slots, smoothed=smoothed)
    score = np.where(cache > 0, DEMONSTRATION_SCORE, -DEMONSTRATION_SCORE)
    return join_action(score, np.zeros_like(score), np.zeros(scenario.num_cameras))
