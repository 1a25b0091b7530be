"""``edgeaigc camera`` and ``edgeaigc gateway`` as a user runs them: camera -> gateway -> model server processes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeaigc.inference.gateway import cli as gateway_cli
from edgeaigc.inference.pipeline import camera
from tests.component.builders import constant_detector_model
from tests.component.conftest import (
    SHARED_DATA,
    ServerProcess,
    free_port,
    sample_value,
    server_process,
    serving,
)
from tests.component.tables import EDGE_NODE, routing_table

ROWS = np.array([[16, 16, 16, 16, 0.9, 0.9]], dtype=np.float32)
YOLOX = SHARED_DATA / "yolox_nano.onnx"
CLIP = SHARED_DATA / "highway_cctv_video02.avi"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("camera-models")
    constant_detector_model(root / "detector" / "model.onnx", ROWS)
    if YOLOX.is_file():
        (root / "yolox_nano").mkdir()
        shutil.copyfile(YOLOX, root / "yolox_nano" / "model.onnx")  # a temporary copy, never one in the project
    return root


@pytest.fixture(scope="module")
def edge(models: Path) -> Iterator[ServerProcess]:
    with server_process(models, "edge") as server:
        yield server


@pytest.fixture(scope="module")
def camera_tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cameras' tokens as a mounted Secret shows them: one file per camera."""
    directory = tmp_path_factory.mktemp("camera-tokens")
    for camera_name in ("cam-0", "cam-7", "cam-9"):
        (directory / camera_name).write_text(f"token-of-{camera_name}-{camera_name * 4}\n")
    return directory


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, edge: ServerProcess, camera_tokens: Path
) -> Iterator[ServerProcess]:
    """``python -m edgeaigc.inference.gateway.cli`` routing both models to the edge server, cameras authenticated
    by their tokens; stopped with SIGTERM."""
    table = tmp_path_factory.mktemp("camera-routing") / "routing.json"
    local = {"detector": [edge.url], "yolox_nano": [edge.url]}
    table.write_text(routing_table(1, local, {}).to_json())
    port = free_port()
    command = [sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE]
    command += ["--routing-table", str(table), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--camera-tokens", str(camera_tokens)]
    with serving(command, port) as running:
        yield running
    assert running.process.returncode == 0, running.stderr  # a graceful stop on SIGTERM


@pytest.fixture(scope="module")
def pipeline_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camera-config") / "pipeline.yaml"
    document = {
        "detector": {
            "model": "detector",
            "input_size": [64, 64],
            "letterbox": "stretch",
            "output_layout": "yolov5",
            "classes": {0: "car"},
        },
        "flow": {"fps": 20},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def run_camera(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edgeaigc.inference.pipeline.camera", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_generated_scene_through_gateway_and_server(
    gateway: ServerProcess, pipeline_config: Path, tmp_path: Path, camera_tokens: Path
) -> None:
    started = time.time()
    result = run_camera(
        "--generated", "--frames", "6", "--fps", "20", "--gateway", gateway.url, "--camera-id", "cam-7",
        "--pipeline-config", str(pipeline_config), "--json", "--frame-log", str(tmp_path / "frames.jsonl"),
        "--token-file", str(camera_tokens / "cam-7"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert (summary["frames"], summary["errors"], summary["camera"]) == (6, 0, "cam-7")
    assert summary["detections_per_frame"] == 1.0
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] < 5000
    assert 0 < summary["achieved_fps"] <= 25
    scrape = gateway.scrape()
    labels = {"model": "detector", "code": "200", "served_by": "edge", "edge_node": EDGE_NODE}
    assert sample_value(scrape, "edgeaigc_requests_total", **labels) == 6
    assert (sample_value(scrape, "edgeaigc_camera_request_bytes_total", edge_node=EDGE_NODE, camera="cam-7") or 0) > 0
    frames = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [frame["frame"] for frame in frames] == list(range(6)) and all(frame["ok"] for frame in frames)
    assert started <= frames[0]["time"] <= frames[-1]["time"] <= time.time()
    assert all(0 < frame["latency_ms"] < 5000 for frame in frames)


def test_failed_frames_exit_1_and_are_reported(
    gateway: ServerProcess, pipeline_config: Path, tmp_path: Path, camera_tokens: Path
) -> None:
    result = run_camera(
        "--generated", "--frames", "3", "--fps", "50", "--gateway", gateway.url, "--detector-model", "unrouted",
        "--pipeline-config", str(pipeline_config), "--frame-log", str(tmp_path / "frames.jsonl"),
        "--token-file", str(camera_tokens / "cam-0"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "3 frames, 3 errors" in result.stdout
    assert "error: frame 0: inference of 'unrouted' failed (HTTP 404): model 'unrouted' is not routed" in result.stdout
    frames = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [(frame["frame"], frame["ok"]) for frame in frames] == [(0, False), (1, False), (2, False)]
    assert "HTTP 404" in frames[0]["error"]


@pytest.mark.parametrize("every_frame", [False, True], ids=["drops-frames", "every-frame"])
def test_a_camera_over_its_bandwidth_share_slows_down_instead_of_failing(
    edge: ServerProcess, pipeline_config: Path, tmp_path: Path, camera_tokens: Path, every_frame: bool
) -> None:
    """A gateway process whose node uplink (200 kB/s) carries about 4 of the camera's 49 kB frames a second;
    the camera asks for 25 a second: it is refused (429), drops frames, and ends without errors. With
    --every-frame it sends each refused frame again instead: every frame is answered (the same input as an
    unthrottled run, what demo --real compares policies on)."""
    uplink = 200_000
    table = routing_table(1, {"detector": [edge.url]}, {}, cameras=["cam-9"])
    node = dataclasses.replace(table.edge_nodes[EDGE_NODE], uplink_bytes_per_second=uplink)
    (tmp_path / "routing.json").write_text(dataclasses.replace(table, edge_nodes={EDGE_NODE: node}).to_json())
    port = free_port()
    command = [sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE, "--port", str(port)]
    command += ["--routing-table", str(tmp_path / "routing.json"), "--host", "127.0.0.1", "--uplink-max-wait", "0.1"]
    command += ["--camera-tokens", str(camera_tokens)]
    with serving(command, port) as gateway:
        started = time.monotonic()
        result = run_camera(
            "--generated", "--frames", "50", "--fps", "25", "--gateway", gateway.url, "--camera-id", "cam-9",
            "--pipeline-config", str(pipeline_config), "--json", "--token-file", str(camera_tokens / "cam-9"),
            *(["--every-frame"] if every_frame else []),
        )  # fmt: skip
        elapsed = time.monotonic() - started
        scrape = gateway.scrape()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["errors"] == 0 and summary["throttled"] >= 1, summary
    if every_frame:
        assert summary["dropped"] == 0 and len(summary.get("error_messages", [])) == 0, summary
        assert summary["frames"] == 50 and summary["latency_ms"]["p50"] is not None
    else:
        assert summary["dropped"] >= 1, summary
    accepted = sample_value(scrape, "edgeaigc_gateway_uplink_accepted_bytes_total", camera="cam-9", edge_node=EDGE_NODE)
    assert accepted is not None and accepted > 0
    # What a token bucket can let through: one full bucket (1 s of the rate) plus the rate over the run.
    assert accepted <= uplink * (elapsed + 1.0), (accepted, elapsed)


@pytest.mark.skipif(not (YOLOX.is_file() and CLIP.is_file()), reason=f"{SHARED_DATA} absent: no real clip to play")
def test_real_clip_with_yolox_nano(gateway: ServerProcess, camera_tokens: Path) -> None:
    token = str(camera_tokens / "cam-0")
    result = run_camera(
        "--video", str(CLIP), "--frames", "5", "--fps", "25", "--gateway", gateway.url, "--json", "--token-file", token
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 5 and summary["errors"] == 0
    assert summary["detections_per_frame"] >= 4  # a busy motorway: about 8 vehicles in view


def test_camera_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert camera.main(["--video", str(tmp_path / "none.avi"), "--gateway", "http://127.0.0.1:9"]) == 2
    assert f"cannot open video {tmp_path / 'none.avi'}" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector: {colour: red}")
    assert camera.main(["--generated", "--gateway", "http://x", "--pipeline-config", str(bad)]) == 2
    assert "unknown keys ['colour']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        camera.main(["--gateway", "http://x"])  # neither --video nor --generated
    assert exit_info.value.code == 2


def test_gateway_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = str(tmp_path / "routing.json")
    base = ["--edge-node", "pi-0", "--routing-table", table, "--no-camera-auth"]
    assert gateway_cli.main([*base, "--max-request-bytes", "lots"]) == 2
    assert "not a size: 'lots'" in capsys.readouterr().err
    assert gateway_cli.main([*base, "--breaker-failures", "0"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        gateway_cli.main(["--routing-table", table, "--no-camera-auth"])  # --edge-node is required
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:  # camera authentication is turned off only explicitly
        gateway_cli.main(["--edge-node", "pi-0", "--routing-table", table])
    assert exit_info.value.code == 2
    assert "one of the arguments --camera-tokens --no-camera-auth is required" in capsys.readouterr().err


def test_pacer_never_bursts_after_a_slow_answer() -> None:
    """A slow first answer must not make the camera send the frames it fell behind on at once."""
    pacer = camera.SendPacer(fps=50)
    sends = [pacer.wait()]
    time.sleep(0.2)  # the first answer is slow, as when the models warm up
    sends += [pacer.wait() for _ in range(5)]
    gaps = np.diff(sends)
    assert gaps.min() >= pacer.interval, gaps
    assert (len(sends) - 1) / (sends[-1] - sends[1] + pacer.interval) <= 50
