"""The EdgeAIGC system model (DESIGN §3): response time, cost and reward of one slot.

Every queue (a camera's uplink, a cached model's compute share, a node's backhaul) is a
processor-sharing queue: a request of size ``z`` on a queue of capacity ``c`` carrying load
``L`` (both in work per second) takes ``z / (c - L)``. Expressed in *shares* — ``a = L / K``
is the share of the resource that the load needs and ``s`` the share granted, ``K`` the
capacity of the whole resource — the number of requests in the queue is ``N = a / (s - a)``.
Beyond utilisation ``rho_max`` we extend ``N`` linearly (its tangent), so an overloaded share
costs a large but finite delay instead of infinity; ``N`` stays convex in ``s``, which makes
the optimal shares for a given load a convex problem with an exact water-filling solution
(:func:`optimal_shares`, Kleinrock's square-root rule where nothing is overloaded).

Edge nodes are independent given the demand (each camera uses one node, each node has its own
backhaul, the cloud is not congested): the slot objective is a sum over nodes, which the
myopic optimizer and the oracle exploit (:func:`node_cache_objective`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeaigc.policy.scenario import Scenario

#: Response-time histogram edges (seconds) for p95 over many slots without storing requests.
RESPONSE_TIME_BINS = np.geomspace(1e-4, 1e4, 801)
_MAX_SECONDS = 1e4


@dataclasses.dataclass(frozen=True)
class Plan:
    """A feasible decision for one slot (see :mod:`.plan` for how actions become plans)."""

    cache: np.ndarray
    """x[e, m] in {0, 1}; respects each node's storage."""
    compute_share: np.ndarray
    """f[e, m] >= 0, zero where not cached, sums to at most 1 per node."""
    bandwidth_share: np.ndarray
    """b[u] >= 0, sums to at most 1 over the cameras of each node."""


@dataclasses.dataclass(frozen=True)
class SlotOutcome:
    """What happened in one slot under a plan."""

    requests: float
    hits: float
    response_time_sum_s: float
    slo_violations: float
    cost: float
    cloud_compute_cost: float
    transfer_cost: float
    edge_energy_cost: float
    download_cost: float
    downloads: int
    backhaul_download_mb: float
    """Megabytes the slot's newly cached models fetched from the cloud over the backhaul."""
    peer_download_mb: float
    """Megabytes they fetched from a site neighbour instead: backhaul bytes saved by peers."""
    reward: float
    response_time_histogram: np.ndarray
    """Requests per :data:`RESPONSE_TIME_BINS` bin."""
    node_compute_utilisation: np.ndarray
    """Compute load of hits on each node over its capacity (what a node exporter shows)."""

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests > 0 else 0.0

    @property
    def mean_response_time_s(self) -> float:
        return self.response_time_sum_s / self.requests if self.requests > 0 else 0.0


def queue_population(share: np.ndarray, needed: np.ndarray, rho_max: float) -> np.ndarray:
    """Requests in a processor-sharing queue, ``N(s, a)``, linear beyond ``rho_max``.

    Args:
        share: share ``s`` of the resource granted to the queue.
        needed: share ``a`` of the resource the load needs (load over full capacity).
        rho_max: utilisation at which the linear extension starts.
    """
    share, needed = np.broadcast_arrays(np.asarray(share, float), np.asarray(needed, float))
    knee = needed / rho_max
    # Only subnormal loads (property tests generate them) overflow here, to inf: not an error.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ps = needed / (share - needed)
        linear = rho_max / (1 - rho_max) + rho_max**2 / (needed * (1 - rho_max) ** 2) * (knee - share)
    population = np.where(share >= knee, ps, linear)
    return np.where(needed > 0, population, 0.0)


def seconds_per_work(share: np.ndarray, needed: np.ndarray, capacity: np.ndarray, rho_max: float) -> np.ndarray:
    """Delay per unit of work on a queue: a request of size ``z`` takes ``z * this``.

    ``capacity`` is the full resource (work per second); the load is ``needed * capacity``.
    With no load this is the bare service time ``1 / (share * capacity)``.
    """
    share, needed, capacity = np.broadcast_arrays(
        np.asarray(share, float), np.asarray(needed, float), np.asarray(capacity, float)
    )
    load = needed * capacity
    with np.errstate(divide="ignore", invalid="ignore"):
        loaded = queue_population(share, needed, rho_max) / load
        idle = 1.0 / (share * capacity)
    out = np.where(needed > 0, loaded, idle)
    return np.minimum(np.nan_to_num(out, nan=_MAX_SECONDS, posinf=_MAX_SECONDS), _MAX_SECONDS)


def optimal_shares(needed: np.ndarray, group: np.ndarray, num_groups: int, rho_max: float) -> np.ndarray:
    """Shares minimising the total queue population of each group, summing to 1 per group.

    Solves ``min sum_i N(s_i, a_i)  s.t.  sum_{i in g} s_i <= 1`` exactly (to bisection
    precision) for every group ``g`` at once. KKT: ``s_i = a_i + sqrt(a_i / nu_g)`` where the
    marginal gain of a share exceeds ``nu_g``, else 0 (a queue beyond saving is left at zero).
    Items without load get no share.

    Args:
        needed: ``a_i``, the share of its group's resource item ``i``'s load needs (1-D).
        group: group index of each item (1-D ints in ``[0, num_groups)``).
        num_groups: number of groups.
        rho_max: see :func:`queue_population`.
    """
    needed = np.asarray(needed, float)
    loaded = needed > 0
    safe = np.where(loaded, needed, 1.0)
    # Marginal gain -dN/ds is largest (and constant) in the linear region: past it, no share.
    # Only subnormal loads overflow here, to inf (an unbounded marginal gain): not an error.
    with np.errstate(divide="ignore", over="ignore"):
        threshold = np.where(loaded, rho_max**2 / (safe * (1 - rho_max) ** 2), 0.0)
    group_max = np.zeros(num_groups)
    np.maximum.at(group_max, group, threshold)
    has_load = group_max > 0
    sqrt_sum = np.bincount(group, weights=np.sqrt(needed * loaded), minlength=num_groups)
    need_sum = np.bincount(group, weights=needed * loaded, minlength=num_groups)
    # Low end of the bracket, where the shares add up to at least 1: below every threshold all
    # loaded queues are active (sum >= sum of a, enough when overloaded), and at the square-root
    # rule's nu they add up to exactly 1 when not overloaded.
    group_min = np.full(num_groups, np.inf)
    np.minimum.at(group_min, group, np.where(loaded, threshold, np.inf))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        closed = np.where(need_sum < 1, (sqrt_sum / np.maximum(1 - need_sum, 1e-300)) ** 2, np.inf)
    low = np.log(np.maximum(np.minimum(closed, group_min) * 0.5, 1e-300))
    high = np.log(np.maximum(group_max, 1e-300)) + 1e-9

    def shares_at(log_nu: np.ndarray) -> np.ndarray:
        nu = np.exp(log_nu)[group]
        return np.where(loaded & (nu <= threshold), needed + np.sqrt(safe / nu), 0.0)

    for _ in range(64):
        middle = (low + high) / 2
        total = np.bincount(group, weights=shares_at(middle), minlength=num_groups)
        too_much = total > 1
        low = np.where(too_much, middle, low)
        high = np.where(too_much, high, middle)
    share = shares_at(high)
    # Queues left at zero sit in their linear region, where the marginal gain is constant (their
    # threshold): the rest of each group goes to them as a fractional knapsack, highest
    # threshold first, each up to its knee.
    remainder = np.maximum(1 - np.bincount(group, weights=share, minlength=num_groups), 0.0)
    candidates = np.flatnonzero(loaded & (share == 0))
    if candidates.size:
        order = candidates[np.lexsort((-threshold[candidates], group[candidates]))]
        knee = needed[order] / rho_max
        cumulative = np.cumsum(knee)
        groups_in_order = group[order]
        first_of_group = np.r_[True, groups_in_order[1:] != groups_in_order[:-1]]
        group_start = np.maximum.accumulate(np.where(first_of_group, np.arange(order.size), 0))
        before = cumulative - knee - np.where(group_start > 0, cumulative[group_start - 1], 0.0)
        share[order] = np.clip(remainder[groups_in_order] - before, 0.0, knee)
    share[~has_load[group]] = 0.0
    return share


@dataclasses.dataclass(frozen=True)
class NodeServing:
    """Per (node, model) service times under a cache and compute shares, and node costs."""

    hit_seconds: np.ndarray  # [..., E, M]
    miss_seconds: np.ndarray  # [..., E, M]
    response_time_sum_s: np.ndarray  # [..., E] sum over requests per second, excluding upload
    cost_per_second: np.ndarray  # [..., E] excluding downloads
    compute_utilisation: np.ndarray  # [..., E]


def node_serving(
    scenario: Scenario, cache: np.ndarray, node_rates: np.ndarray, compute_share: np.ndarray
) -> NodeServing:
    """Service times and costs given node-level request rates ``Λ[..., E, M]`` (requests/s)."""
    cache = cache.astype(float)
    F = scenario.node_compute[:, None]  # [E, 1] reference cores
    work = scenario.model_work_s  # [M]
    compute_needed = node_rates * work / F  # share of the node's compute each model's load needs
    overhead = scenario.request_overhead_s
    hit_seconds = overhead + work * seconds_per_work(compute_share, compute_needed * cache, F, scenario.rho_max)
    d_in, d_out = scenario.model_input_mbit, scenario.model_output_mbit
    R = scenario.node_backhaul_mbps
    backhaul_needed = ((1 - cache) * node_rates * d_in).sum(axis=-1) / R  # [..., E]
    backhaul_spw = seconds_per_work(np.ones_like(backhaul_needed), backhaul_needed, R, scenario.rho_max)
    miss_seconds = (
        overhead
        + d_in * backhaul_spw[..., None]
        + scenario.node_rtt_s[:, None]
        + d_out / R[:, None]
        + work / scenario.cloud_core_speed
    )
    response_time_sum = (node_rates * (cache * hit_seconds + (1 - cache) * miss_seconds)).sum(axis=-1)
    miss_cost = (
        work / scenario.cloud_core_speed * scenario.cloud_price_per_core_second
        + (d_in + d_out) / 8000.0 * scenario.price_per_gb_transfer
    )
    hit_cost = work / scenario.node_core_speed[:, None] * scenario.node_energy_price_per_core_second[:, None]
    cost_per_second = (node_rates * (cache * hit_cost + (1 - cache) * miss_cost)).sum(axis=-1)
    utilisation = (compute_needed * cache).sum(axis=-1)
    return NodeServing(hit_seconds, miss_seconds, response_time_sum, cost_per_second, utilisation)


def optimal_compute_shares(scenario: Scenario, cache: np.ndarray, node_rates: np.ndarray) -> np.ndarray:
    """Best compute shares f[..., E, M] for a cache and node request rates."""
    needed = node_rates * scenario.model_work_s / scenario.node_compute[:, None] * cache
    shape = needed.shape
    groups = int(np.prod(shape[:-1]))
    group = np.repeat(np.arange(groups), shape[-1])
    return optimal_shares(needed.reshape(-1), group, groups, scenario.rho_max).reshape(shape)


def upload_needed(scenario: Scenario, camera_rates: np.ndarray, link_quality: np.ndarray) -> np.ndarray:
    """Share of its node's access bandwidth each camera's uploads need, ``a[u]``."""
    load_mbps = camera_rates @ scenario.model_input_mbit
    capacity = scenario.node_bandwidth_mhz[scenario.camera_node] * link_quality
    return load_mbps / capacity


def optimal_bandwidth_shares(scenario: Scenario, camera_rates: np.ndarray, link_quality: np.ndarray) -> np.ndarray:
    """Best bandwidth shares b[u] for the cameras' upload loads."""
    needed = upload_needed(scenario, camera_rates, link_quality)
    return optimal_shares(needed, scenario.camera_node, scenario.num_nodes, scenario.rho_max)


def peer_sourced(scenario: Scenario, cache: np.ndarray, previous_cache: np.ndarray) -> np.ndarray:
    """Which newly cached models come from a site neighbour, ``[..., E, M]`` (bool).

    A model newly cached on node ``e`` is fetched over the site's LAN when another node of ``e``'s
    site held it in ``previous_cache`` (its replica there serves the file: ``fetch-model --peer``);
    otherwise from the cloud over ``e``'s backhaul. A node alone in its site never has a peer.
    """
    new = (cache > 0) & ~(previous_cache > 0)
    site = scenario.node_site
    if np.unique(site).size == site.size:
        return np.zeros(new.shape, dtype=bool)
    neighbours = (site[:, None] == site[None, :]) & ~np.eye(site.size, dtype=bool)
    held_by_neighbour = np.einsum("ef,...fm->...em", neighbours.astype(float), (previous_cache > 0).astype(float)) > 0
    return new & held_by_neighbour


def download_megabytes(
    scenario: Scenario, cache: np.ndarray, previous_cache: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Megabytes each node's newly cached models fetch ``(over the backhaul, from site peers)``, ``[..., E]``."""
    new = (cache > 0) & ~(previous_cache > 0)
    from_peer = peer_sourced(scenario, cache, previous_cache)
    backhaul = ((new & ~from_peer) * scenario.model_size_mb).sum(axis=-1)
    peer = (from_peer * scenario.model_size_mb).sum(axis=-1)
    return backhaul, peer


def download_cost(scenario: Scenario, cache: np.ndarray, previous_cache: np.ndarray) -> np.ndarray:
    """Cost of fetching newly cached models, per node: ``sum_m s_m c_dl [x_new and not x_old]``.

    Only backhaul bytes are priced: a model a site neighbour already holds comes over the LAN
    (:func:`peer_sourced`), whose bytes cost nothing here.
    """
    backhaul_mb, _ = download_megabytes(scenario, cache, previous_cache)
    return backhaul_mb / 1000.0 * scenario.download_price_per_gb


def download_seconds(scenario: Scenario, cache: np.ndarray, previous_cache: np.ndarray) -> np.ndarray:
    """Seconds the newly cached models of each node take to arrive, ``[..., E]``: over its backhaul,
    or over the site's LAN for those a site neighbour holds (:func:`peer_sourced`).

    Until then their requests still go to the cloud: a new model starts paying off only after this.
    """
    backhaul_mb, peer_mb = download_megabytes(scenario, cache, previous_cache)
    return backhaul_mb * 8.0 / scenario.node_backhaul_mbps + peer_mb * 8.0 / scenario.site_lan_mbps


def switching_cost(
    scenario: Scenario,
    cache: np.ndarray,
    previous_cache: np.ndarray,
    gain_per_slot: np.ndarray,
    total_rate: float | np.ndarray,
) -> np.ndarray:
    """What moving each node from ``previous_cache`` to ``cache`` costs, in slot-objective units, ``[..., E]``.

    The download price of the newly cached models (:func:`download_cost`, weighted as the slot
    objective weighs cost) plus the gain forgone while they download (:func:`download_seconds`):
    a move pays for itself over ``h`` slots when ``gain_per_slot * h`` exceeds this.

    Args:
        gain_per_slot: how much lower the slot objective is with ``cache`` than with ``previous_cache``,
            per node (negative: worse).
        total_rate: the fleet's request rate, which sets the objective's weights (:func:`objective_weights`).
    """
    _, w_cost = objective_weights(scenario, total_rate)
    price = np.asarray(w_cost)[..., None] * download_cost(scenario, cache, previous_cache)
    forgone = np.maximum(gain_per_slot, 0.0) * download_seconds(scenario, cache, previous_cache) / scenario.slot_seconds
    return price + forgone


def objective_weights(scenario: Scenario, total_rate: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights turning (response-time sum per second, cost per slot) into the slot objective.

    ``objective = w_time * response_time_sum + w_cost * cost_in_slot`` equals
    ``alpha * mean_rt / t_ref + beta * cost_per_request / c_ref``.
    """
    rate = np.asarray(total_rate, float)
    w = scenario.reward
    # A slot without requests has no response time, and its cost counts whole (as in evaluate_slot).
    with np.errstate(divide="ignore"):
        w_time = np.where(rate > 0, w.alpha / w.t_ref_s / rate, 0.0)
        w_cost = np.where(
            rate > 0, w.beta / w.c_ref_per_request / (rate * scenario.slot_seconds), w.beta / w.c_ref_per_request
        )
    return w_time, w_cost


def node_cache_objective(
    scenario: Scenario,
    cache: np.ndarray,
    node_rates: np.ndarray,
    total_rate: float | np.ndarray,
) -> np.ndarray:
    """Per-node slot objective of a cache with optimal compute shares, ``[..., E]``.

    Excludes what caching cannot change (uplink delay) and the download cost (which depends on
    the previous cache); add :func:`download_cost` times the cost weight for a full objective.
    """
    shares = optimal_compute_shares(scenario, cache, node_rates)
    serving = node_serving(scenario, cache, node_rates, shares)
    w_time, w_cost = objective_weights(scenario, total_rate)
    w_time, w_cost = np.asarray(w_time)[..., None], np.asarray(w_cost)[..., None]
    return w_time * serving.response_time_sum_s + w_cost * serving.cost_per_second * scenario.slot_seconds


def node_rates_of(scenario: Scenario, camera_rates: np.ndarray) -> np.ndarray:
    """Aggregate camera request rates ``[..., U, M]`` into node rates ``[..., E, M]``."""
    by_camera = np.moveaxis(np.asarray(camera_rates, float), -2, 0)  # [U, ..., M]
    by_node = np.zeros((scenario.num_nodes, *by_camera.shape[1:]))
    np.add.at(by_node, scenario.camera_node, by_camera)
    return np.moveaxis(by_node, 0, -2)


def response_time_histogram(seconds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weights per :data:`RESPONSE_TIME_BINS` bin (log-spaced, so the bin is computed directly)."""
    low, high = RESPONSE_TIME_BINS[0], RESPONSE_TIME_BINS[-1]
    bins = len(RESPONSE_TIME_BINS) - 1
    position = np.log(np.clip(seconds, low, high) / low) / np.log(high / low) * bins
    index = np.minimum(position.astype(np.int64), bins - 1)
    return np.bincount(index.ravel(), weights=np.asarray(weights, float).ravel(), minlength=bins)


def evaluate_slot(
    scenario: Scenario,
    plan: Plan,
    camera_rates: np.ndarray,
    link_quality: np.ndarray,
    previous_cache: np.ndarray,
) -> SlotOutcome:
    """Serve one slot of requests (``camera_rates[u, m]`` per second) under ``plan``."""
    node_rates = node_rates_of(scenario, camera_rates)
    serving = node_serving(scenario, plan.cache, node_rates, plan.compute_share)
    # Uplink: each camera's requests share its bandwidth share of the node's access link.
    uplink_capacity = scenario.node_bandwidth_mhz[scenario.camera_node] * link_quality
    uplink_needed = upload_needed(scenario, camera_rates, link_quality)
    uplink_spw = seconds_per_work(plan.bandwidth_share, uplink_needed, uplink_capacity, scenario.rho_max)
    upload_seconds = scenario.model_input_mbit[None, :] * uplink_spw[:, None]  # [U, M]
    node = scenario.camera_node
    cached = plan.cache[node] > 0  # [U, M]
    response = upload_seconds + np.where(cached, serving.hit_seconds[node], serving.miss_seconds[node])
    counts = camera_rates * scenario.slot_seconds
    requests = float(counts.sum())
    response_sum = float((counts * response).sum())
    downloads_cost = float(download_cost(scenario, plan.cache, previous_cache).sum())
    backhaul_mb, peer_mb = download_megabytes(scenario, plan.cache, previous_cache)
    serving_cost = float(serving.cost_per_second.sum()) * scenario.slot_seconds
    # Cost breakdown (for reports): recomputed per component from the same rates.
    misses = node_rates * (1 - plan.cache)
    hits_rate = node_rates * plan.cache
    work = scenario.model_work_s
    cloud_compute = float((misses * work).sum()) / scenario.cloud_core_speed * scenario.cloud_price_per_core_second
    transfer = float((misses * (scenario.model_input_mbit + scenario.model_output_mbit)).sum()) / 8000.0
    transfer *= scenario.price_per_gb_transfer
    energy = float(
        (
            hits_rate * work / scenario.node_core_speed[:, None] * scenario.node_energy_price_per_core_second[:, None]
        ).sum()
    )
    cost = serving_cost + downloads_cost
    if requests > 0:
        mean_rt = response_sum / requests
        cost_per_request = cost / requests
    else:
        mean_rt, cost_per_request = 0.0, cost
    w = scenario.reward
    reward = -(w.alpha * mean_rt / w.t_ref_s + w.beta * cost_per_request / w.c_ref_per_request)
    histogram = response_time_histogram(response, counts)
    return SlotOutcome(
        requests=requests,
        hits=float((counts * cached).sum()),
        response_time_sum_s=response_sum,
        slo_violations=float((counts * (response > scenario.slo_s)).sum()),
        cost=cost,
        cloud_compute_cost=cloud_compute * scenario.slot_seconds,
        transfer_cost=transfer * scenario.slot_seconds,
        edge_energy_cost=energy * scenario.slot_seconds,
        download_cost=downloads_cost,
        downloads=int(((plan.cache > 0) & ~(previous_cache > 0)).sum()),
        backhaul_download_mb=float(backhaul_mb.sum()),
        peer_download_mb=float(peer_mb.sum()),
        reward=float(reward),
        response_time_histogram=histogram,
        node_compute_utilisation=serving.compute_utilisation,
    )


def histogram_quantile(histogram: np.ndarray, quantile: float) -> float:
    """Quantile of response times from a :data:`RESPONSE_TIME_BINS` histogram (geometric mid-bin)."""
    total = histogram.sum()
    if total <= 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(histogram), quantile * total))
    index = min(index, len(histogram) - 1)
    return float(np.sqrt(RESPONSE_TIME_BINS[index] * RESPONSE_TIME_BINS[index + 1]))
