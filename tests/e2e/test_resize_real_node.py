"""An in-place CPU resize under traffic on the real node lowers the latency the client observes, soon.

``edgeaigc bench-resize``, short: a model replica (a generated stand-in of YOLOX-Nano's cost, so
``../shared/data`` is not needed) on ``pi-real-0`` at 100m under a steady stream of 4 requests/s,
resized in place through ``pods/resize`` to 800m. The command's own checks must hold (the quota in
the container's cgroup and the pod's status, no restart, latency down, settled within two 10-s
decision intervals) and the level must fall by more than half (work / CPU says by 8x).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeaigc.cluster.components import binaries
from edgeaigc.inference.bench.models import standin_detector
from tests.e2e.test_real_node import _why_no_containers


def test_a_resize_from_a_small_to_a_large_limit_lowers_latency_within_two_intervals(tmp_path: Path) -> None:
    reason = _why_no_containers()
    if reason:
        pytest.skip(reason)
    if shutil.which("go") is None and binaries().missing():
        pytest.skip("the local control plane needs Go to build its pinned binaries (none cached)")
    model = standin_detector(tmp_path / "standin.onnx")
    out = tmp_path / "resize"
    command = [
        sys.executable, "-m", "edgeaigc.cli", "bench-resize", "--model", f"standin-detector={model}",
        "--from", "100", "--to", "800", "--no-back", "--phase-seconds", "10", "--rate", "4", "--interval", "10",
        "--output", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    print(result.stdout[-4000:])
    assert (out / "resize.json").exists(), (
        f"the benchmark did not finish:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    document = json.loads((out / "resize.json").read_text())
    assert result.returncode == 0, f"{document['checks']}\n{result.stderr[-2000:]}"
    (resize,) = document["resizes"]
    assert resize["container_quota_us"] == 80_000 and resize["restarts_after"] == resize["restarts_before"]
    assert resize["level_after_ms"] < resize["level_before_ms"] / 2, resize
    assert resize["settled_s"] is not None and resize["settled_s"] <= 20.0, resize
