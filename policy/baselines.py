"""Non-learned placement policies: random, LRU, LFU and static top-K popularity.

Each decides from the :class:`~edgeaigc.policy.observation.Observation` alone. All but
``random`` choose a cache and return :func:`~edgeaigc.policy.plan.action_for_cache` for it, so
their shares are the optimal ones for the measured load (tilts 0): they differ from the
learned policy in caching only.

A slot's requests arrive as rates, not as an ordered stream, so the classic caches are run per
slot: every model requested at a node in the slot counts as used in that slot, and misses are
inserted in order of their request rate, the best proxy for which came last and most often.
"""

from __future__ import annotations

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_for_cache, action_size
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import node_rates_of


def fits_storage(sizes: np.ndarray, capacity: float, cache: np.ndarray) -> bool:
    """Whether the models in ``cache`` (mask ``[M]``) fit ``capacity``.

    Free space is decreased model by model in index order, as
    :func:`~edgeaigc.policy.plan.select_cache` does, so a cache judged to fit here is never
    trimmed by the plan projection because of float rounding.
    """
    free = float(capacity)
    for model in np.flatnonzero(cache):
        if sizes[model] > free:
            return False
        free -= sizes[model]
    return True


def _insert_evicting(
    sizes: np.ndarray,
    capacity: float,
    cache: np.ndarray,
    model: int,
    evictable: np.ndarray,
) -> bool:
    """Insert ``model`` into ``cache`` (in place), evicting ``evictable`` in order as needed.

    Evicts the shortest prefix of ``evictable`` that makes room; if even evicting all of them
    is not enough, leaves the cache unchanged and returns False.
    """
    trial = cache.copy()
    trial[model] = True
    for victim in (-1, *evictable):
        if victim >= 0:
            trial[victim] = False
        if fits_storage(sizes, capacity, trial):
            cache[:] = trial
            return True
    return False


class _CachePolicy:
    """Shared bookkeeping: the scenario of the current episode."""

    name = "cache"

    def __init__(self) -> None:
        self._scenario: Scenario | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        self._scenario = scenario

    @property
    def scenario(self) -> Scenario:
        if self._scenario is None:
            raise RuntimeError(f"{self.name}: call reset() before act()")
        return self._scenario


class RandomPolicy(_CachePolicy):
    """Every value of the action uniform in ``[-1, 1]``, each slot (caching and shares)."""

    name = "random"

    def __init__(self) -> None:
        super().__init__()
        self._rng = np.random.default_rng(0)

    def reset(self, scenario: Scenario, seed: int) -> None:
        super().reset(scenario, seed)
        self._rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, action_size(self.scenario)).astype(np.float32)


class LRUPolicy(_CachePolicy):
    """Least recently used, per node.

    A model is used at a node in a slot when it was requested there (measured rate > 0). Each
    miss is inserted, evicting the least recently used cached models until it fits; models
    used in the same slot are never evicted for one another, and a model larger than the
    node's storage is never cached.
    """

    name = "lru"

    def __init__(self) -> None:
        super().__init__()
        self._clock = 0
        self._last_used = np.zeros((0, 0))

    def reset(self, scenario: Scenario, seed: int) -> None:
        super().reset(scenario, seed)
        self._clock = 0
        self._last_used = np.full((scenario.num_nodes, scenario.num_models), -np.inf)

    def act(self, observation: Observation) -> np.ndarray:
        scenario = self.scenario
        self._clock += 1
        node_rates = node_rates_of(scenario, observation.camera_rates)
        requested = node_rates > 0
        self._last_used[requested] = self._clock
        cache = observation.cache > 0
        sizes = scenario.model_size_mb
        for node in range(scenario.num_nodes):
            capacity = scenario.node_storage_mb[node]
            misses = np.flatnonzero(requested[node] & ~cache[node] & (sizes <= capacity))
            for model in misses[np.argsort(-node_rates[node, misses], kind="stable")]:
                stale = np.flatnonzero(cache[node] & (self._last_used[node] < self._clock))
                order = stale[np.argsort(self._last_used[node, stale], kind="stable")]
                _insert_evicting(sizes, capacity, cache[node], int(model), order)
        return action_for_cache(scenario, cache)


class LFUPolicy(_CachePolicy):
    """Least frequently used, per node.

    Frequencies are the measured request counts per (node, model) since reset. A miss is
    inserted if it fits after evicting cached models used strictly less often than it (least
    frequent first); otherwise the cache is kept.
    """

    name = "lfu"

    def __init__(self) -> None:
        super().__init__()
        self._counts = np.zeros((0, 0))

    def reset(self, scenario: Scenario, seed: int) -> None:
        super().reset(scenario, seed)
        self._counts = np.zeros((scenario.num_nodes, scenario.num_models))

    def act(self, observation: Observation) -> np.ndarray:
        scenario = self.scenario
        node_rates = node_rates_of(scenario, observation.camera_rates)
        self._counts += node_rates * scenario.slot_seconds
        cache = observation.cache > 0
        sizes = scenario.model_size_mb
        for node in range(scenario.num_nodes):
            capacity = scenario.node_storage_mb[node]
            counts = self._counts[node]
            misses = np.flatnonzero((node_rates[node] > 0) & ~cache[node] & (sizes <= capacity))
            for model in misses[np.argsort(-counts[misses], kind="stable")]:
                rarer = np.flatnonzero(cache[node] & (counts < counts[model]))
                order = rarer[np.argsort(counts[rarer], kind="stable")]
                _insert_evicting(sizes, capacity, cache[node], int(model), order)
        return action_for_cache(scenario, cache)


class StaticTopKPolicy(_CachePolicy):
    """The globally most requested models, chosen once and never changed.

    At the first decision, models are ranked by their total measured request rate over the
    fleet; each node then caches, in that order, every model that still fits. Models without
    measured demand are left out: nothing says they will be used, and their download is sure.
    """

    name = "static_topk"

    def __init__(self) -> None:
        super().__init__()
        self._cache: np.ndarray | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        super().reset(scenario, seed)
        self._cache = None

    def act(self, observation: Observation) -> np.ndarray:
        scenario = self.scenario
        if self._cache is None:
            fleet_rates = observation.camera_rates.sum(axis=0)
            ranking = np.argsort(-fleet_rates, kind="stable")
            ranking = ranking[fleet_rates[ranking] > 0]
            cache = np.zeros((scenario.num_nodes, scenario.num_models), dtype=bool)
            for node in range(scenario.num_nodes):
                for model in ranking:
                    cache[node, model] = True
                    if not fits_storage(scenario.model_size_mb, scenario.node_storage_mb[node], cache[node]):
                        cache[node, model] = False
            self._cache = cache
        return action_for_cache(scenario, self._cache)
