"""The myopic optimizer: each slot, the best cache for the demand just measured.

It assumes the next slot looks like the last one and minimises that one slot's objective —
serving with optimal compute shares (:func:`~edgeaigc.policy.system_model.node_cache_objective`)
plus the download cost of newly cached models — ignoring what later slots will want. Edge
nodes are independent given the demand, so each node is optimised on its own, on a scenario
cut down to that node and the models that can matter there (:func:`single_node_scenario`),
which keeps the work proportional to the node's candidates rather than to the fleet.

The subset enumeration (:func:`feasible_subsets`), the cut-down scenario and the cost weight
(:func:`cost_weight`) are shared with the clairvoyant oracle (:mod:`.oracle`).
"""

from __future__ import annotations

import dataclasses

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


def single_node_scenario(scenario: Scenario, node: int, models: np.ndarray) -> Scenario:
    """``scenario`` cut down to edge node ``node``, its cameras and the models ``models``.

    Nodes are independent given the demand, and a model that is neither requested nor cached
    at a node adds nothing to its objective, so the node's objective for caches and rates over
    ``models`` is the same on this scenario (as node 0) as on the full one.
    """
    return scenario.for_node(node, models)


def cost_weight(scenario: Scenario, total_rate: float) -> float:
    """Weight of a cost in $ per slot in the slot objective (``-reward``), as the env counts it."""
    return float(objective_weights(scenario, total_rate)[1])


@dataclasses.dataclass(frozen=True)
class NodeSlot:
    """One node's one-slot caching problem over its candidate models."""

    scenario: Scenario
    """The node alone with its candidate models (:func:`single_node_scenario`)."""
    node_rates: np.ndarray
    """Requests per second of each candidate at the node, ``[K]``."""
    previous_cache: np.ndarray
    """Which candidates are cached now, ``bool[K]`` (adding the others costs a download)."""
    total_rate: float
    """Requests per second over the whole fleet: the objective is per request of the fleet."""

    def objective(self, rows: np.ndarray) -> np.ndarray:
        """One-slot objective of each candidate cache ``rows[B, K]``, downloads included, ``[B]``."""
        caches = rows[:, None, :].astype(float)
        serving = node_cache_objective(self.scenario, caches, self.node_rates[None], self.total_rate)[:, 0]
        downloads = download_cost(self.scenario, caches, self.previous_cache[None])[:, 0]
        return serving + cost_weight(self.scenario, self.total_rate) * downloads

    def fits(self, rows: np.ndarray) -> np.ndarray:
        """Which rows ``[B, K]`` fit the node's storage (the arithmetic of ``select_cache``)."""
        free = np.full(len(rows), float(self.scenario.node_storage_mb[0]))
        ok = np.ones(len(rows), dtype=bool)
        for model, size in enumerate(self.scenario.model_size_mb):
            taken = rows[:, model]
            ok &= ~taken | (size <= free)
            free = np.where(taken, free - size, free)
        return ok


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
    by marginal gain from the current cache followed by 1-swap local search (a local optimum,
    not guaranteed optimal). Among equally good caches the one keeping the most cached storage
    wins, so models without demand this slot stay until their space is worth more.
    """
    node_rates = node_rates_of(scenario, camera_rates)
    total_rate = float(node_rates.sum())
    current = current_cache > 0
    cache = np.zeros((scenario.num_nodes, scenario.num_models))
    for node in range(scenario.num_nodes):
        models = np.flatnonzero((node_rates[node] > 0) | current[node])
        if models.size == 0:
            continue
        problem = NodeSlot(
            scenario=single_node_scenario(scenario, node, models),
            node_rates=node_rates[node, models],
            previous_cache=current[node, models],
            total_rate=total_rate,
        )
        try:
            rows = feasible_subsets(
                problem.scenario.model_size_mb,
                problem.scenario.node_storage_mb[0],
                np.ones(models.size, dtype=bool),
                max_subsets,
            )
        except TooManySubsets:
            cache[node, models] = local_search(problem, max_moves=_MAX_LOCAL_SEARCH_MOVES)
            continue
        values = problem.objective(rows)
        kept = rows @ (problem.previous_cache * problem.scenario.model_size_mb)
        best = values.min()
        tied = values <= best + _TIE_TOLERANCE * abs(best)
        cache[node, models] = rows[int(np.argmax(np.where(tied, kept, -np.inf)))]
    return cache


def local_search(problem: NodeSlot, max_moves: int = _MAX_LOCAL_SEARCH_MOVES) -> np.ndarray:
    """Greedy by marginal gain from the current cache, then 1-swap local search (heuristic).

    Starting from the current cache (demand drifts slowly, so few moves are needed, and cached
    models without demand stay unless their space is worth more), the greedy phase adds the
    model with the best gain while one improves the objective; the local search then also
    tries dropping a model or swapping a cached one for one that is not, taking the best
    improving move until none is left. Returns a local optimum ``bool[K]``.
    """
    cache = problem.previous_cache.copy()
    value = float(problem.objective(cache[None])[0])
    for swaps in (False, True):
        for _ in range(max_moves):
            rows = _neighbours(cache, swaps)
            rows = rows[problem.fits(rows)]
            if len(rows) == 0:
                break
            values = problem.objective(rows)
            best = int(np.argmin(values))
            if not values[best] < value - _TIE_TOLERANCE * abs(value):
                break
            cache, value = rows[best], float(values[best])
    return cache


def _neighbours(cache: np.ndarray, swaps: bool) -> np.ndarray:
    """Caches one move away: add a model, or (with ``swaps``) also drop one or swap two."""
    size = cache.size
    inside, outside = np.flatnonzero(cache), np.flatnonzero(~cache)
    moves = [np.eye(size, dtype=bool)[outside]]
    if swaps:
        moves.append(np.eye(size, dtype=bool)[inside])
        drop, add = np.meshgrid(inside, outside, indexing="ij")
        swap = np.zeros((drop.size, size), dtype=bool)
        swap[np.arange(drop.size), drop.ravel()] = True
        swap[np.arange(drop.size), add.ravel()] = True
        moves.append(swap)
    return cache[None, :] ^ np.concatenate(moves)


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
