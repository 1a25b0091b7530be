"""Shared fixtures: small hand-made scenarios whose figures can be checked by hand."""

from __future__ import annotations

from typing import Any

import pytest

from edgeaigc.policy.scenario import Scenario, scenario_from_dict


def one_node_document(**overrides: Any) -> dict[str, Any]:
    """One node, one camera, one model per stage; round numbers for hand computation."""
    document: dict[str, Any] = {
        "name": "hand",
        "slot_seconds": 60,
        "episode_slots": 3,
        "slo_s": 0.4,
        "rho_max": 0.95,
        "reward": {"alpha": 1.0, "beta": 1.0, "t_ref_s": 0.1, "c_ref_per_request": 1e-5},
        "cloud": {
            "core_speed": 2.0,
            "price_per_core_second": 1e-4,
            "price_per_gb_transfer": 0.1,
            "download_price_per_gb": 1.0,
        },
        "edge_nodes": [
            {
                "name": "pi",
                "storage_mb": 10,
                "cores": 1,
                "core_speed": 1.0,
                "bandwidth_mhz": 10,
                "backhaul_mbps": 10,
                "rtt_ms": 50,
                "energy_price_per_core_second": 1e-6,
            }
        ],
        "cameras": {"count": 1, "fps": 1.0, "link": {"spectral_efficiency_states": [1.0], "stay_probability": 1.0}},
        "models": [
            # 125 kB = 1 Mbit of input, 100 ms of work at one reference core.
            {"name": "det", "stage": "detection", "size_mb": 10, "work_ms": 100, "input_kb": 125, "output_kb": 0},
            {"name": "cls", "stage": "classification", "size_mb": 5, "work_ms": 10, "input_kb": 10, "output_kb": 0},
            {"name": "flow", "stage": "flow", "size_mb": 1, "work_ms": 1, "input_kb": 1, "output_kb": 0},
        ],
    }
    document.update(overrides)
    return document


@pytest.fixture
def hand_scenario() -> Scenario:
    return scenario_from_dict(one_node_document())
