"""``edgeaigc demo --real`` end to end, short: real edge and cloud nodes, the chart, real frames.

The demo models are built here in seconds with two training steps (untrained, but real ONNX
files whose outputs are deterministic: the vehicle counts of the two phases must still match).
With ../shared/data present, camera-0 plays the real motorway clip through YOLOX-Nano too. The
command's own checks must hold: every camera answered in both phases and the same vehicles
counted whatever the placement. The gateway must have served both from the Pi and from the real
cloud replicas (misses answered, not lost).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_real_node import _why_no_containers


def test_the_real_demo_answers_every_camera_and_counts_the_same_under_both_policies(tmp_path: Path) -> None:
    reason = _why_no_containers()
    if reason:
        pytest.skip(reason)
    models = tmp_path / "demo-models"
    build = [
        sys.executable, "-m", "edgeaigc.inference.demo_models.build", "--output", str(models), "--detector-steps", "2",
        "--classifier-steps", "2", "--classifier-frames", "16", "--eval-frames", "4", "--validation-frames", "4",
        "--count-frames", "10", "--no-progress",
    ]  # fmt: skip
    subprocess.run(build, check=True, timeout=900, capture_output=True)
    out = tmp_path / "real-demo"
    command = [
        sys.executable, "-m", "edgeaigc.cli", "demo", "--real", "--minutes", "1.5", "--fps", "1", "--interval", "10",
        "--demo-models", str(models), "--output-dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=2400, check=False)
    print(result.stdout[-6000:])
    assert (out / "summary.json").exists(), (
        f"the demo did not finish:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert summary["vehicle_counts_match"]
    served = {"edge": 0.0, "cloud": 0.0}
    for phase in summary["phases"]:
        for camera in phase["cameras"].values():
            assert camera["frames"] > 0 and camera["errors"] == 0, camera
        for figures in phase["per_model"].values():
            served["edge"] += figures["edge_requests"] or 0.0
            served["cloud"] += (figures["requests"] or 0.0) - (figures["edge_requests"] or 0.0)
    assert served["edge"] > 0 and served["cloud"] > 0, served  # hits on the Pi and misses answered by the cloud
    # sim-to-real read the replicas themselves at both places: their own histogram and their containers' CPU
    read = {
        place
        for phase in summary["phases"]
        for sample in phase["samples"]
        for places in sample["replicas"].values()
        for place, figures in places.items()
        if figures["requests"] > 0 and figures["cpu_seconds"]
    }
    assert read == {"edge", "cloud"}, read
