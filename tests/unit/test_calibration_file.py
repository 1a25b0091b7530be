"""The work calibration file is the contract between ``bench-serving --parts work`` and the scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgeaigc.policy
from edgeaigc.inference.bench.calibration import write_calibration
from edgeaigc.policy.scenario import load_calibration

STATE = {"cpu": "test", "cores": 1, "measured_at": "2026-01-01T00:00:00+00:00"}


def test_what_the_benchmark_writes_is_what_a_scenario_reads(tmp_path: Path) -> None:
    models = {
        "det": {"work_ms": 16.7, "p90_ms": 25.2, "runs": 200, "basis": "measured", "measured_as": "YOLOX-Nano"},
        "det-large": {"work_ms": 99.7, "basis": "scaled", "note": "x 6.45/1.08 GFLOPs"},
    }
    path = tmp_path / "out" / "work_ms.json"
    write_calibration(path, models, STATE)
    assert load_calibration(path) == {"det": pytest.approx(16.7), "det-large": pytest.approx(99.7)}
    document = json.loads(path.read_text())
    assert document["reference_core"] == STATE and document["raspberry_pi_4"]["core_speed"] == 0.3


def test_the_shipped_calibration_has_the_documented_keys() -> None:
    path = Path(edgeaigc.policy.__file__).parent / "calibration" / "work_ms.json"
    document = json.loads(path.read_text())
    assert set(document) == {"description", "reference_core", "raspberry_pi_4", "models"}
    assert all(entry["basis"] in ("measured", "scaled") for entry in document["models"].values())
    assert load_calibration(path)
