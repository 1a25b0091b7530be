"""The myopic optimizer: each slot, the best cache for the demand just measured.

It assumes the next slot looks like the last one and minimises that one slot's objective —
serving with optimal compute shares (:func:`~edgeaigc.policy.system_model.node_cache_objective`)
plus the download cost of newly cached models — ignoring what later slots will want. Edge
nodes are independent given the demand, so each node is optimised on its own.

The subset enumeration (:func:`feasible_subsets`) and the padded per-node evaluation
(:func:`stack_subsets`, :func:`cost_weight`) are shared with the clairvoyant oracle
(:mod:`.oracle`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_for_cache
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    download_cost,
    node_cache_objective,
    node_rates_of,
    objective_weights,
)

#: Above this many feasible caches on a node, the myopic optimizer searches instead of enumerating.
MAX_EXACT_SUBSETS = 4096
#: Relative slack within which two objectives count as a tie (ties keep cached models).
_TIE_TOLERANCE = 1e-12
#: Bound on local-search moves, a safeguard: each accepted move strictly improves the objective.
_MAX_LOCAL_SEARCH_MOVES = 200


class TooManySubsets(ValueError):
    """A node has more feasible cache subsets than the enumeration limit."""


def feasible_subsets(
    sizes: np.ndarray, capacity: float, candidates: np.ndarray, limit: int | None = None
) -> np.ndarray:
    """Every subset of ``candidates`` that fits in ``capacity``, as a mask ``bool[S, M]``.

    Built one candidate at a time: each subset found so far is copied with the candidate added
    where it still fits. Candidates are taken in increasing index order and the free space is
    decreased one model at a time, which is exactly how :func:`~edgeaigc.policy.plan.select_cache`
    fills a node, so every subset returned here survives the plan projection unchanged, float
    rounding included. Row 0 is the empty cache.

    Args:
        sizes: size of every model, ``[M]`` (same unit as ``capacity``).
        capacity: storage of the node.
        candidates: the models that may be cached, a mask ``bool[M]`` or an array of indices.
        limit: raise :class:`TooManySubsets` as soon as there are more subsets than this.
    """
    sizes = np.asarray(sizes, float)
    candidates = np.asarray(candidates)
    members = np.flatnonzero(candidates) if candidates.dtype == bool else np.unique(candidates)
    subsets = np.zeros((1, sizes.size), dtype=bool)
    free = np.array([float(capacity)])
    for model in members:
        fits = sizes[model] <= free
        if not fits.any():
            continue
        grown = subsets[fits]
        grown[:, model] = True
        subsets = np.concatenate([subsets, grown])
        free = np.concatenate([free, free[fits] - sizes[model]])
        if limit is not None and len(subsets) > limit:
            raise TooManySubsets(f"more than {limit} feasible caches over {members.size} candidate models")
    return subsets


def stack_subsets(subsets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-node subset lists as one batch of fleet caches, ``(cache[S, E, M], valid[S, E])``.

    Node ``e``'s row of batch entry ``s`` is its subset ``s``; nodes with fewer subsets are
    padded with empty caches marked invalid. Nodes being independent, one call to
    :func:`~edgeaigc.policy.system_model.node_cache_objective` then scores every node's subsets.
    """
    num_nodes = len(subsets)
    num_models = subsets[0].shape[1]
    depth = max(len(rows) for rows in subsets)
    cache = np.zeros((depth, num_nodes, num_models))
    valid = np.zeros((depth, num_nodes), dtype=bool)
    for node, rows in enumerate(subsets):
        cache[: len(rows), node] = rows
        valid[: len(rows), node] = True
    return cache, valid


def cost_weight(scenario: Scenario, total_rate: float) -> float:
    """Weight of a cost in $ per slot in the slot objective (``-reward``), as the env counts it.

    A slot without requests charges its cost per request as the cost itself (see
    :func:`~edgeaigc.policy.system_model.evaluate_slot`), hence the separate branch.
    """
    if total_rate > 0:
        return float(objective_weights(scenario, total_rate)[1])
    return scenario.reward.beta / scenario.reward.c_ref_per_request


def myopic_cache(
    scenario: Scenario,
    camera_rates: np.ndarray,
    current_cache: np.ndarray,
    max_subsets: int = MAX_EXACT_SUBSETS,
) -> np.ndarray:
    """The cache ``x[E, M]`` minimising one slot's objective if ``camera_rates`` repeat.

    On each node the candidates are the models with demand there plus those already cached (a
    model with neither can only cost a download). Exact — every feasible subset of the
    candidates is scored — when a node has at most ``max_subsets`` of them; otherwise greedy
    by marginal gain followed by 1-swap local search (not guaranteed optimal). Among equally
    good caches the one keeping the most cached storage wins, so models without demand this
    slot stay until space is needed.
    """
    node_rates = node_rates_of(scenario, camera_rates)
    total_rate = float(node_rates.sum())
    weight = cost_weight(scenario, total_rate)
    current = current_cache > 0
    E = scenario.num_nodes
    subsets: list[np.ndarray] = []
    searched: list[int] = []
    for node in range(E):
        candidates = (node_rates[node] > 0) | current[node]
        try:
            subsets.append(
                feasible_subsets(scenario.model_size_mb, scenario.node_storage_mb[node], candidates, max_subsets)
            )
        except TooManySubsets:
            searched.append(node)
            subsets.append(np.zeros((1, scenario.num_models), dtype=bool))
    caches, valid = stack_subsets(subsets)
    objective = node_cache_objective(scenario, caches, node_rates, total_rate)
    objective = objective + weight * download_cost(scenario, caches, current_cache)
    objective = np.where(valid, objective, np.inf)
    kept = np.where(valid, ((caches > 0) & current) @ scenario.model_size_mb, -np.inf)
    best = objective.min(axis=0)
    tied = objective <= best + _TIE_TOLERANCE * np.abs(best)
    choice = np.argmax(np.where(tied, kept, -np.inf), axis=0)
    cache = caches[choice, np.arange(E)]
    if searched:
        found = _search_nodes(scenario, searched, node_rates, total_rate, weight, current_cache)
        cache[searched] = found[searched]
    return cache


def _fits(scenario: Scenario, node: int, rows: np.ndarray) -> np.ndarray:
    """Which cache rows ``[B, M]`` fit the node's storage (same arithmetic as ``select_cache``)."""
    free = np.full(len(rows), float(scenario.node_storage_mb[node]))
    ok = np.ones(len(rows), dtype=bool)
    for model in range(rows.shape[1]):
        size = scenario.model_size_mb[model]
        taken = rows[:, model]
        ok &= ~taken | (size <= free)
        free = np.where(taken, free - size, free)
    return ok


def _neighbours(cache: np.ndarray, candidates: np.ndarray, swaps: bool) -> np.ndarray:
    """Caches one move away: add a candidate, drop a cached model, or (with swaps) both."""
    inside, outside = np.flatnonzero(cache), np.flatnonzero(candidates & ~cache)
    moves = [np.eye(cache.size, dtype=bool)[outside]]
    if swaps:
        moves.append(np.eye(cache.size, dtype=bool)[inside])
        drop, add = np.meshgrid(inside, outside, indexing="ij")
        swap = np.zeros((drop.size, cache.size), dtype=bool)
        swap[np.arange(drop.size), drop.ravel()] = True
        swap[np.arange(drop.size), add.ravel()] = True
        moves.append(swap)
    return cache[None, :] ^ np.concatenate(moves)


def _search_nodes(
    scenario: Scenario,
    nodes: Sequence[int],
    node_rates: np.ndarray,
    total_rate: float,
    weight: float,
    current_cache: np.ndarray,
) -> np.ndarray:
    """Greedy by marginal gain from the empty cache, then 1-swap local search (heuristic).

    The given nodes are searched in lockstep, so each move costs one batched evaluation for all
    of them. Returns the caches of every node, ``bool[E, M]``; rows of other nodes are empty.
    """
    E, M = scenario.num_nodes, scenario.num_models
    current = current_cache > 0
    candidates = node_rates > 0
    cache = np.zeros((E, M), dtype=bool)
    value = node_cache_objective(scenario, cache, node_rates, total_rate)
    value = value + weight * download_cost(scenario, cache, current_cache)
    # The greedy phase only adds; the local search that follows may also drop and swap.
    for swaps in (False, True):
        active = set(nodes)
        for _ in range(_MAX_LOCAL_SEARCH_MOVES):
            moves = [np.zeros((0, M), dtype=bool)] * E
            for node in active:
                rows = _neighbours(cache[node], candidates[node], swaps)
                moves[node] = rows[_fits(scenario, node, rows)]
            active = {node for node in active if len(moves[node]) > 0}
            if not active:
                break
            batch, valid = stack_subsets(moves)
            objective = node_cache_objective(scenario, batch, node_rates, total_rate)
            objective = objective + weight * download_cost(scenario, batch, current_cache)
            objective = np.where(valid, objective, np.inf)
            for node in list(active):
                best = int(np.argmin(objective[:, node]))
                if objective[best, node] < value[node] - _TIE_TOLERANCE * abs(value[node]):
                    cache[node], value[node] = moves[node][best], objective[best, node]
                else:
                    active.discard(node)
    # Cached models without demand change nothing this slot: keep those that still fit.
    for node in nodes:
        for model in np.flatnonzero(current[node] & ~candidates[node]):
            grown = cache[node].copy()
            grown[model] = True
            if _fits(scenario, node, grown[None])[0]:
                cache[node] = grown
    return cache


class MyopicPolicy:
    """Best cache for the measured demand, one slot ahead (see :func:`myopic_cache`).

    Exact on every node with at most ``max_subsets`` feasible caches among its candidates
    (all nodes of the bundled ``tiny``, ``paper`` and ``traffic-city`` scenarios); greedy plus
    1-swap local search beyond. Shares are the measured-optimal ones (tilts 0).
    """

    name = "myopic"

    def __init__(self, max_subsets: int = MAX_EXACT_SUBSETS) -> None:
        self.max_subsets = max_subsets
        self._scenario: Scenario | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        self._scenario = scenario

    def act(self, observation: Observation) -> np.ndarray:
        if self._scenario is None:
            raise RuntimeError("call reset() before act()")
        cache = myopic_cache(self._scenario, observation.camera_rates, observation.cache, self.max_subsets)
        return action_for_cache(self._scenario, cache)
