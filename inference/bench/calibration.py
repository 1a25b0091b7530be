"""The work calibration: milliseconds of one request of each model at one reference core (``--parts work``).

The benchmark writes it to ``--calibration-out`` (``docs/calibration.md`` has the format); a
scenario names the file it reads in its ``calibration`` key, and the shipped scenarios read
``policy/calibration/work_ms.json``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.inference.bench.models import example_input, session, standin_classifier

#: A Raspberry Pi 4 core (Cortex-A72, 1.5 GHz, 128-bit NEON) is taken as 0.3 of the reference
#: x86 core these figures are measured on: work on a Pi 4 core = work_ms x 1/0.3. The same factor
#: as the traffic-city scenario's edge core_speed; an assumption, not a measurement on a Pi.
PI4_CORE_SPEED = 0.3
#: Published YOLOX GFLOPs (Megvii's model zoo) used to scale the measured Nano to the larger variants.
YOLOX_GFLOPS = {"nano": 1.08, "tiny": 6.45, "s": 26.8}


def work_ms(run: Callable[[], object], min_runs: int = 20, max_seconds: float = 5.0) -> dict[str, float]:
    """Median and p90 wall milliseconds of ``run`` on this thread (after 3 warm-up runs)."""
    for _ in range(3):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < min_runs or (time.perf_counter() < deadline and len(times) < 200):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000.0)
        if time.perf_counter() > deadline and len(times) >= min_runs:
            break
    return {
        "work_ms": round(statistics.median(times), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "runs": len(times),
    }


def measure_work(detector: Path, detector_is_yolox: bool, workdir: Path) -> dict[str, Any]:
    """Per-model work per request at one core; see the written file's ``description``."""
    from edgeaigc.inference.pipeline.config import FlowConfig
    from edgeaigc.inference.pipeline.detect import Detection
    from edgeaigc.inference.pipeline.flow import FlowAnalyzer

    models: dict[str, Any] = {}
    det = session(detector)
    det_feed = example_input(det)
    nano = work_ms(lambda: det.run(None, det_feed))
    det_name = "YOLOX-Nano (COCO, 1x3x416x416)" if detector_is_yolox else "generated stand-in of YOLOX-Nano's cost"
    for variant in ("det-yolox-nano-day", "det-yolox-nano-night"):
        models[variant] = {**nano, "basis": "measured", "measured_as": det_name}
    if detector_is_yolox:
        for variant, key in (("det-yolox-tiny", "tiny"), ("det-yolox-s-rain", "s")):
            factor = YOLOX_GFLOPS[key] / YOLOX_GFLOPS["nano"]
            models[variant] = {
                "work_ms": round(nano["work_ms"] * factor, 1),
                "basis": "scaled",
                "note": f"YOLOX-Nano measured x {YOLOX_GFLOPS[key]}/{YOLOX_GFLOPS['nano']} GFLOPs (published); "
                "an upper bound: plain convolutions run more FLOPs per ms than Nano's depthwise ones",
            }
    classifiers = {
        "cls-small": (64, (16, 32, 64)),
        "cls-night": (64, (16, 32, 64)),
        "cls-truck-axles": (96, (16, 32, 64, 128)),
        "cls-large": (128, (32, 64, 128, 256)),
    }
    for name, (size, widths) in classifiers.items():
        path = standin_classifier(workdir / f"{name}.onnx", size, widths)
        cls = session(path)
        crops = {"input": np.random.default_rng(2).uniform(0, 1, size=(1, 3, size, size)).astype(np.float32)}
        models[name] = {
            **work_ms(functools.partial(cls.run, None, crops)),
            "basis": "measured",
            "measured_as": f"generated CNN stand-in, one {size}x{size} crop, conv widths {list(widths)}",
        }
    # The flow stage is the project's own Python (tracking, counting, occupancy), not an ONNX model.
    rng = np.random.default_rng(3)
    analyzer = FlowAnalyzer(FlowConfig(fps=5))
    frame = [0]

    def flow_update() -> None:
        frame[0] += 1
        detections = [
            Detection((x, y, x + 40.0, y + 25.0), 0.9, 2, "car")
            for x, y in zip(rng.uniform(0, 600, 8) + frame[0] * 5 % 600, rng.uniform(0, 330, 8), strict=True)
        ]
        analyzer.update(detections, (360, 640))

    flow = work_ms(flow_update)
    for name in ("flow-urban", "flow-highway", "flow-intersection", "flow-incident"):
        models[name] = {
            **flow,
            "basis": "measured",
            "measured_as": "FlowAnalyzer.update, 8 vehicles in a 640x360 frame",
        }
    return models


def machine_state() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m_5m_15m": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_calibration(path: Path, models: dict[str, Any], state: dict[str, Any]) -> None:
    """Write the calibration file of ``docs/calibration.md``: ``models.<name>.work_ms`` and how each was measured."""
    document = {
        "description": (
            "Work per request of each model of the traffic-city scenario: median wall milliseconds of one "
            "request at one reference core (onnxruntime CPU, one intra-op thread, batch 1), written by "
            "`edgeaigc bench-serving --parts work`. basis: measured (the model itself or the stand-in named in "
            "measured_as), or scaled (from a measured model by published GFLOPs)."
        ),
        "reference_core": state,
        "raspberry_pi_4": {
            "core_speed": PI4_CORE_SPEED,
            "slowdown_factor": round(1 / PI4_CORE_SPEED, 2),
            "note": (
                "Assumed, not measured: a Pi 4 core (Cortex-A72, 1.5 GHz, 128-bit NEON) does 0.3 of the "
                "reference core's inference work, so a request takes work_ms x 3.33 there. Same figure as the "
                "scenarios' edge core_speed."
            ),
        },
        "models": models,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
