"""The traffic pipeline end to end: ONNX models in-process and behind a real server; YOLOX-Nano on a real clip."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.pipeline.backend import RemoteInferenceError
from edgeaigc.inference.pipeline.config import (
    YOLOX_NANO_COCO,
    ClassifierConfig,
    DetectorConfig,
    FlowConfig,
    PipelineConfig,
)
from edgeaigc.inference.pipeline.traffic import TrafficPipeline
from tests.component.builders import colour_classifier_model, constant_detector_model
from tests.component.conftest import SHARED_DATA, RunningServer, running_server

YOLOX = SHARED_DATA / "yolox_nano.onnx"
CLIP = SHARED_DATA / "highway_cctv_video02.avi"
#: Two boxes in a 64x64 input (yolov5 layout: cx, cy, w, h, objectness, class 0), one below threshold.
ROWS = np.array([[16, 16, 16, 16, 0.9, 0.9], [48, 48, 16, 16, 0.2, 0.9]], dtype=np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-models")
    constant_detector_model(root / "detector" / "model.onnx", ROWS)
    colour_classifier_model(root / "classifier" / "model.onnx")
    return root


def config_for(detector: str, classifier: str) -> PipelineConfig:
    return PipelineConfig(
        detector=DetectorConfig(
            model=detector, input_size=(64, 64), letterbox="stretch", output_layout="yolov5", classes={0: "car"}
        ),
        classifier=ClassifierConfig(
            model=classifier, input_size=(8, 8), labels=("red-car", "blue-car"), min_confidence=0.6, crop_padding=0.0
        ),
        flow=FlowConfig(fps=5),
    )


def frame_with_a_red_vehicle() -> np.ndarray:
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[16:48, 16:48] = (0, 0, 255)  # BGR red where the detector's box maps (stretch x2)
    return frame


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[RunningServer]:
    with running_server(models, max_request_bytes=1 << 20) as running:
        yield running


def test_local_pipeline_detects_classifies_and_serialises(models: Path) -> None:
    config = config_for(str(models / "detector" / "model.onnx"), str(models / "classifier" / "model.onnx"))
    pipeline = TrafficPipeline.local(config, camera="cam-1")
    _, jpeg = cv2.imencode(".png", frame_with_a_red_vehicle())
    result = pipeline.process(jpeg.tobytes())
    assert [d.box for d in result.detections] == [(16.0, 16.0, 48.0, 48.0)]
    assert result.detections[0].vehicle_type == "red-car"  # the classifier refined the detector's "car"
    assert result.classifications is not None and result.classifications[0].confidence > 0.9
    document = json.loads(json.dumps(result.to_dict()))
    assert document["camera"] == "cam-1" and document["flow"]["vehicles_in_view"] == 1
    assert document["detections"][0]["vehicle_type"] == "red-car"
    assert set(document["timings_ms"]) == {"decode", "detect", "classify", "flow"}
    with pytest.raises(InvalidInput, match="not an image OpenCV can decode"):
        pipeline.process(b"garbage")


def test_remote_pipeline_gives_the_same_result_as_in_process(models: Path, server: RunningServer) -> None:
    local = TrafficPipeline.local(
        config_for(str(models / "detector" / "model.onnx"), str(models / "classifier" / "model.onnx"))
    )
    remote = TrafficPipeline.remote(config_for("detector", "classifier"), server.url, camera="cam-2")
    frame = frame_with_a_red_vehicle()
    here, there = local.process(frame), remote.process(frame)
    assert there.detections == here.detections
    assert there.classifications == here.classifications
    assert there.flow.occupancy == here.flow.occupancy
    missing = TrafficPipeline.remote(config_for("nobody", "classifier"), server.url)
    with pytest.raises(RemoteInferenceError) as error:
        missing.process(frame)
    assert error.value.status_code == 404
    assert str(error.value) == (
        "inference of 'nobody' failed (HTTP 404): model 'nobody' not found in the model repository"
    )


@pytest.mark.skipif(not (YOLOX.is_file() and CLIP.is_file()), reason=f"{SHARED_DATA} absent: no real clip to count")
def test_yolox_nano_counts_the_motorway_clip_plausibly() -> None:
    """YOLOX-Nano on the 30 s motorway clip at 12.5 frames/s, counting line across the near carriageway.

    Expected: about 21 vehicles cross y = 0.6 H right of x = 0.25 W (counted by eye on a line-scan
    image of the clip: one row per frame at that height shows 20 cars/vans and 1 lorry; the
    cyclist on the hard shoulder is a "person" and not counted). YOLOX-Nano misses some lorries and
    may split or merge a vehicle, so the test accepts 17-25, nearly all of them cars.
    """
    config = PipelineConfig(
        detector=dataclasses.replace(YOLOX_NANO_COCO, model=str(YOLOX)),
        flow=FlowConfig(fps=25, metres_per_pixel=0.25, counting_line=((0.25, 0.6), (1.0, 0.6))),
    )
    pipeline = TrafficPipeline.local(config, camera="motorway")
    capture = cv2.VideoCapture(str(CLIP))
    index = frames = detections = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % 2 == 0:
            result = pipeline.process(frame, frame_index=index, timestamp_s=index / 25)
            frames += 1
            detections += len(result.detections)
        index += 1
    capture.release()
    assert frames == 374
    assert 5 <= detections / frames <= 12  # README: about 8.5 boxes per frame before merging classes
    flow = result.flow
    assert 17 <= flow.total_count <= 25, flow.counts
    assert flow.counts.get("car", 0) >= 0.8 * flow.total_count, flow.counts
    assert set(flow.counts) <= {"car", "truck", "bus", "motorcycle"}
    assert 30 <= flow.flow_per_minute <= 55
