"""The README's main command, `edgeaigc demo`, end to end (short phases): it must place models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO


def test_the_demo_places_models_and_reports_both_policies(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("the demo needs Prometheus (apt-get install prometheus)")
    output = tmp_path / "demo.json"
    env = {**os.environ, "EDGEAIGC_CLUSTER_DIR": str(tmp_path / "clusters")}
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "demo", "--minutes", "0.75", "--interval", "5", "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    policies = json.loads(output.read_text())["policies"]
    assert set(policies) == {"td3", "lru"}
    # Both phases served traffic, and the operator cached models: some requests were edge hits.
    for name, figures in policies.items():
        assert figures["hit_rate"] is not None and figures["hit_rate"] > 0, (name, figures)
        assert figures["mean_response_time_s"] > 0, (name, figures)
