"""What a policy may see, and the one encoder shared by the simulator and the operator.

The observation contract (DESIGN §3): only what an operator can measure — request rates per
(camera, model) over the last slot and their trend, each camera's link quality, node use, the
current placement, the clock — plus the fleet description from the API (capacities, sizes,
prices), which lives in the :class:`~edgeaigc.policy.scenario.Scenario`.

The encoder turns an observation into per-(node, model) and per-camera feature rows with no
dependence on E, U or M beyond the number of rows, and with every feature scale-free
(loads as shares of capacity, sizes as fractions of storage), so one network scores pairs
and cameras in any fleet.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeaigc.policy.scenario import STAGES, Scenario
from edgeaigc.policy.system_model import node_rates_of, upload_needed

#: Slots averaged for the trend baseline: trend = last slot's rate - mean of the last ones.
TREND_WINDOW_SLOTS = 5
_CLIP = 10.0

PAIR_FEATURES: tuple[str, ...] = (
    "compute_need",
    "log_compute_need",
    "compute_need_trend",
    "backhaul_need_if_missed",
    "share_of_node_demand",
    "size_over_storage",
    "cached",
    *(f"stage_{stage}" for stage in STAGES),
    "latency_saving_per_request",
    "cost_saving_per_request",
    "download_cost_per_request",
    "node_compute_need",
    "node_backhaul_need",
    "node_storage_used",
    "node_compute_utilisation",
    "hour_sin",
    "hour_cos",
)
CAMERA_FEATURES: tuple[str, ...] = (
    "upload_need",
    "log_upload_need",
    "link_quality",
    "node_upload_need",
    "cameras_at_node_inverse",
)


@dataclasses.dataclass(frozen=True)
class Observation:
    """Measurements up to now, as the operator's Prometheus observer reports them."""

    camera_rates: np.ndarray
    """Requests per second of each (camera, model) over the last slot, ``[U, M]``."""
    camera_rates_recent_mean: np.ndarray
    """Mean of the rates over the last :data:`TREND_WINDOW_SLOTS` slots, ``[U, M]``."""
    link_quality: np.ndarray
    """Spectral efficiency of each camera's link over the last slot, ``[U]``."""
    cache: np.ndarray
    """Current placement x[e, m] in {0, 1}, ``[E, M]``."""
    node_compute_utilisation: np.ndarray
    """Compute load of local inference over capacity, per node, ``[E]``."""
    hour_of_day: float

    @property
    def camera_rate_trend(self) -> np.ndarray:
        return self.camera_rates - self.camera_rates_recent_mean


def encode(scenario: Scenario, observation: Observation) -> dict[str, np.ndarray]:
    """Feature rows for the actor: ``pair[E, M, P]`` and ``camera[U, C]`` (float32)."""
    E, M = scenario.num_nodes, scenario.num_models
    node_rates = node_rates_of(scenario, observation.camera_rates)
    node_trend = node_rates_of(scenario, observation.camera_rate_trend)
    total_rate = max(float(node_rates.sum()), 1e-9)
    work = scenario.model_work_s
    F = scenario.node_compute[:, None]
    compute_need = node_rates * work / F
    compute_trend = node_trend * work / F
    backhaul_need = node_rates * scenario.model_input_mbit / scenario.node_backhaul_mbps[:, None]
    node_demand = node_rates.sum(axis=1, keepdims=True)
    share_of_demand = np.divide(node_rates, node_demand, out=np.zeros_like(node_rates), where=node_demand > 0)
    size_fraction = scenario.model_size_mb / scenario.node_storage_mb[:, None]
    stage_onehot = np.eye(len(STAGES))[scenario.model_stage]  # [M, 3]
    # Nominal per-request savings of a hit over a miss (no queueing), in reward units.
    reward = scenario.reward
    miss_latency = (
        scenario.model_input_mbit / scenario.node_backhaul_mbps[:, None]
        + scenario.node_rtt_s[:, None]
        + scenario.model_output_mbit / scenario.node_backhaul_mbps[:, None]
        + work / scenario.cloud_core_speed
    )
    hit_latency = work / (scenario.node_core_speed[:, None])
    latency_saving = (miss_latency - hit_latency) / reward.t_ref_s
    miss_cost = (
        work / scenario.cloud_core_speed * scenario.cloud_price_per_core_second
        + (scenario.model_input_mbit + scenario.model_output_mbit) / 8000.0 * scenario.price_per_gb_transfer
    )
    hit_cost = work / scenario.node_core_speed[:, None] * scenario.node_energy_price_per_core_second[:, None]
    cost_saving = (miss_cost - hit_cost) / reward.c_ref_per_request
    download = scenario.model_size_mb / 1000.0 * scenario.download_price_per_gb
    download_per_request = download / (total_rate * scenario.slot_seconds) / reward.c_ref_per_request
    storage_used = (observation.cache * scenario.model_size_mb).sum(axis=1) / scenario.node_storage_mb
    hour = 2 * np.pi * observation.hour_of_day / 24.0

    def per_node(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, float)[:, None], (E, M))

    def per_model(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, float)[None, :], (E, M))

    columns = [
        compute_need,
        np.log1p(10 * compute_need),
        compute_trend,
        backhaul_need,
        share_of_demand,
        size_fraction,
        observation.cache.astype(float),
        *(per_model(stage_onehot[:, s]) for s in range(len(STAGES))),
        np.broadcast_to(latency_saving, (E, M)),
        np.broadcast_to(cost_saving, (E, M)),
        per_model(np.broadcast_to(download_per_request, (M,))),
        per_node(compute_need.sum(axis=1)),
        per_node(backhaul_need.sum(axis=1)),
        per_node(storage_used),
        per_node(observation.node_compute_utilisation),
        np.full((E, M), np.sin(hour)),
        np.full((E, M), np.cos(hour)),
    ]
    pair = np.stack(columns, axis=-1)

    needed = upload_needed(scenario, observation.camera_rates, observation.link_quality)
    node_upload = np.bincount(scenario.camera_node, weights=needed, minlength=E)
    cameras_at_node = np.bincount(scenario.camera_node, minlength=E).astype(float)
    camera = np.stack(
        [
            needed,
            np.log1p(10 * needed),
            observation.link_quality / scenario.link_states.max(),
            node_upload[scenario.camera_node],
            1.0 / cameras_at_node[scenario.camera_node],
        ],
        axis=-1,
    )
    return {
        "pair": np.clip(pair, -_CLIP, _CLIP).astype(np.float32),
        "camera": np.clip(camera, -_CLIP, _CLIP).astype(np.float32),
    }


def feature_bounds() -> float:
    """Every encoded feature lies in ``[-bound, bound]``."""
    return _CLIP
