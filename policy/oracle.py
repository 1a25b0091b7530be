"""The clairvoyant oracle: the best plans in hindsight, a lower bound on the slot objective.

It reads the whole episode's realised demand and link quality (``trace.counts`` and
``trace.link_quality`` for slots ``1..T``), which no online policy can. Given the demand, the
best compute and bandwidth shares of a slot follow from its cache alone (water-filling,
:func:`~edgeaigc.policy.system_model.optimal_shares`), the uplink part does not depend on the
cache at all, and edge nodes are independent; what is left is, per node, a shortest path over
time through the node's feasible caches:

- states: every subset of the models ever requested at the node that fits its storage (a model
  never requested there can only cost a download);
- stage cost of slot ``t``: :func:`~edgeaigc.policy.system_model.node_cache_objective` with the
  realised node rates and the fleet's total rate of slot ``t``;
- transition cost: the cost weight of slot ``t`` times the download cost of the models added
  (the cache before slot 1 is empty).

Dynamic programming over it (min-plus with an ``S x S`` download-cost matrix) is exact, so
:attr:`OracleSolution.objective_bound` is the minimum of the episode's summed ``-reward`` over
all feasible plans, up to the bisection precision of the share solver.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeaigc.policy.demand import EpisodeTrace
from edgeaigc.policy.myopic import TooManySubsets, cost_weight, feasible_subsets, single_node_scenario
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    Plan,
    node_cache_objective,
    node_rates_of,
    objective_weights,
    optimal_bandwidth_shares,
    optimal_compute_shares,
    seconds_per_work,
    upload_needed,
)

#: Feasible caches per node beyond which the oracle refuses: the DP holds an S x S matrix and
#: takes O(T * S**2) per node, and every state is scored in every slot.
MAX_ORACLE_SUBSETS = 4096
#: Elements per batched objective evaluation (bounds memory: about 20 float temporaries each).
_BATCH_ELEMENTS = 1_000_000


class OracleTooLarge(RuntimeError):
    """A node has too many feasible caches for the exact oracle; the message says which."""


@dataclasses.dataclass(frozen=True)
class OracleSolution:
    """The oracle's caches for slots ``1..T`` and the bound they achieve."""

    caches: np.ndarray
    """x[t - 1, e, m] in {0, 1}, the cache during slot ``t``, ``[T, E, M]``."""
    objective_bound: float
    """Minimum over all feasible plans of the summed slot objective (``-reward``) over slots ``1..T``."""
    slot_objectives: np.ndarray
    """``-reward`` of each slot ``1..T`` under the oracle's plans, ``[T]`` (sums to the bound)."""
    subsets_per_node: np.ndarray
    """Number of DP states (feasible caches) of each node, ``[E]``."""


def uplink_objective(scenario: Scenario, camera_rates: np.ndarray, link_quality: np.ndarray) -> float:
    """The uplink part of a slot's objective with optimal bandwidth shares (no cache can change it)."""
    total_rate = float(camera_rates.sum())
    if total_rate <= 0:
        return 0.0
    shares = optimal_bandwidth_shares(scenario, camera_rates, link_quality)
    needed = upload_needed(scenario, camera_rates, link_quality)
    capacity = scenario.node_bandwidth_mhz[scenario.camera_node] * link_quality
    per_mbit = seconds_per_work(shares, needed, capacity, scenario.rho_max)
    upload_seconds_sum = float((camera_rates * scenario.model_input_mbit[None, :] * per_mbit[:, None]).sum())
    time_weight, _ = objective_weights(scenario, total_rate)
    return float(time_weight) * upload_seconds_sum


def _stage_costs(
    node_scenario: Scenario, rows: np.ndarray, node_rates: np.ndarray, total_rates: np.ndarray
) -> np.ndarray:
    """Serving objective of each cache ``rows[S, K]`` in each slot, ``[T, S]``.

    Args:
        node_scenario: one node and its candidate models (:func:`single_node_scenario`).
        rows: the node's feasible caches over the candidates.
        node_rates: realised requests per second of each candidate at the node, ``[T, K]``.
        total_rates: realised requests per second over the fleet, ``[T]``.
    """
    caches = rows[None, :, None, :].astype(float)
    T = len(node_rates)
    chunk = max(1, _BATCH_ELEMENTS // rows.size)
    costs = np.empty((T, len(rows)))
    for start in range(0, T, chunk):
        slots = slice(start, start + chunk)
        costs[slots] = node_cache_objective(
            node_scenario, caches, node_rates[slots, None, None, :], total_rates[slots, None]
        )[..., 0]
    return costs


def _shortest_path(stage: np.ndarray, transition: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Min-cost state sequence ``path[T]`` of a layered graph; state 0 is the start state.

    Args:
        stage: cost of being in each state in each slot, ``[T, S]``.
        transition: cost of moving from state ``i`` to state ``j``, ``[S, S]``, before weighting.
        weights: weight of the transition cost into each slot, ``[T]``.
    """
    T, S = stage.shape
    value = stage[0] + weights[0] * transition[0]
    back = np.zeros((T, S), dtype=np.int64)
    columns = np.arange(S)
    for t in range(1, T):
        through = value[:, None] + weights[t] * transition
        back[t] = np.argmin(through, axis=0)
        value = stage[t] + through[back[t], columns]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(np.argmin(value))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def solve_oracle(scenario: Scenario, trace: EpisodeTrace, max_subsets: int = MAX_ORACLE_SUBSETS) -> OracleSolution:
    """Exact best caches in hindsight for slots ``1..T`` of ``trace`` and the resulting bound.

    Raises:
        OracleTooLarge: a node has more than ``max_subsets`` feasible caches.
    """
    camera_rates = trace.counts[1:]
    links = trace.link_quality[1:]
    node_rates = node_rates_of(scenario, camera_rates)  # [T, E, M]
    total_rates = node_rates.sum(axis=(1, 2))
    T, E, M = node_rates.shape
    weights = np.array([cost_weight(scenario, float(rate)) for rate in total_rates])
    slot_objectives = np.array([uplink_objective(scenario, camera_rates[t], links[t]) for t in range(T)])
    bound = float(slot_objectives.sum())
    # Enumerate every node's caches before solving any, so a scenario too large fails at once.
    problems: list[tuple[np.ndarray, Scenario, np.ndarray]] = []
    for node in range(E):
        models = np.flatnonzero((node_rates[:, node] > 0).any(axis=0))
        node_scenario = single_node_scenario(scenario, node, models)
        sizes, storage = node_scenario.model_size_mb, float(node_scenario.node_storage_mb[0])
        try:
            rows = feasible_subsets(sizes, storage, np.ones(models.size, dtype=bool), max_subsets)
        except TooManySubsets as error:
            raise OracleTooLarge(
                f"scenario {scenario.name!r}, node {scenario.node_names[node]}: {error}; "
                f"the exact oracle stops at {max_subsets} per node"
            ) from error
        problems.append((models, node_scenario, rows))
    caches = np.zeros((T, E, M))
    for node, (models, node_scenario, rows) in enumerate(problems):
        stage = _stage_costs(node_scenario, rows, node_rates[:, node, models], total_rates)
        # Moving from cache i to cache j downloads the models of j not in i: (j & ~i) @ size.
        sized = rows * node_scenario.model_size_mb
        added_mb = np.maximum(sized.sum(axis=1)[None, :] - rows.astype(float) @ sized.T, 0.0)
        transition = added_mb / 1000.0 * scenario.download_price_per_gb
        path = _shortest_path(stage, transition, weights)
        previous = np.concatenate([[0], path[:-1]])  # row 0 is the empty cache before slot 1
        node_slot = stage[np.arange(T), path] + weights * transition[previous, path]
        slot_objectives += node_slot
        bound += float(node_slot.sum())
        caches[:, node, models] = rows[path]
    return OracleSolution(
        caches=caches,
        objective_bound=bound,
        slot_objectives=slot_objectives,
        subsets_per_node=np.array([len(rows) for _, _, rows in problems]),
    )


def oracle_plans(scenario: Scenario, trace: EpisodeTrace, solution: OracleSolution) -> list[Plan]:
    """The oracle's plan for each slot ``1..T``: its cache with shares optimal for the realised demand."""
    plans = []
    for index, cache in enumerate(solution.caches):
        slot = index + 1
        node_rates = node_rates_of(scenario, trace.counts[slot])
        plans.append(
            Plan(
                cache=cache,
                compute_share=optimal_compute_shares(scenario, cache, node_rates),
                bandwidth_share=optimal_bandwidth_shares(scenario, trace.counts[slot], trace.link_quality[slot]),
            )
        )
    return plans


class OraclePolicy:
    """The clairvoyant oracle as a policy object: solved at reset, then one plan per slot.

    Not a :class:`~edgeaigc.policy.base.PlacementPolicy` (it is given the trace and returns
    plans, not actions); apply its plans with ``env.step_plan(policy.plan(env.slot))``.
    """

    name = "oracle"

    def __init__(self, max_subsets: int = MAX_ORACLE_SUBSETS) -> None:
        self.max_subsets = max_subsets
        self.solution: OracleSolution | None = None
        self._plans: list[Plan] = []

    def reset(self, scenario: Scenario, seed: int, trace: EpisodeTrace) -> None:
        """Solve the episode (``seed`` is unused: the oracle is deterministic given the trace)."""
        self.solution = solve_oracle(scenario, trace, self.max_subsets)
        self._plans = oracle_plans(scenario, trace, self.solution)

    def plan(self, slot: int) -> Plan:
        """The plan for ``slot`` (``1..T``, as ``env.slot`` counts)."""
        if not 1 <= slot <= len(self._plans):
            raise IndexError(f"oracle has plans for slots 1..{len(self._plans)}, not {slot}")
        return self._plans[slot - 1]
