"""The traffic pipeline's pure parts: decoding, NMS, tracking, counting, speed, occupancy, congestion.

Counting is checked on generated clips whose ground truth the generator knows: detections are
the true boxes with noise (jitter, missed detections, short-lived false positives), so what is
tested is the tracker and the flow logic, not a detector.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.pipeline.config import (
    ConfigError,
    DetectorConfig,
    FlowConfig,
    pipeline_config_from_dict,
)
from edgeaigc.inference.pipeline.detect import Detection, decode_output, nms, postprocess
from edgeaigc.inference.pipeline.flow import FlowAnalyzer, crosses
from edgeaigc.inference.pipeline.image import Letterbox, decode_frame, letterbox
from edgeaigc.inference.pipeline.scenes import GeneratedClip, SceneConfig, generate_clip


def noisy_detections(clip: GeneratedClip, seed: int, miss: float = 0.1, jitter: float = 2.0) -> list[list[Detection]]:
    """True boxes with pixel jitter, ``miss`` of them dropped, and a one-frame false positive now and then."""
    rng = np.random.default_rng(seed)
    frames = []
    for truths in clip.truths:
        detections = []
        for truth in truths:
            if rng.random() < miss:
                continue
            box = np.array(truth.box) + rng.normal(0, jitter, 4)
            detections.append(Detection(tuple(float(v) for v in box), 0.9, 0, truth.vehicle_type))
        if rng.random() < 0.2:
            x, y = rng.uniform(0, clip.config.width - 30), rng.uniform(0, clip.config.height - 20)
            detections.append(Detection((x, y, x + 30, y + 20), 0.4, 0, "car"))
        frames.append(detections)
    return frames


def vertical_line_config(config: SceneConfig, **overrides: object) -> FlowConfig:
    return FlowConfig(
        fps=config.fps,
        metres_per_pixel=1 / config.pixels_per_metre,
        counting_line=((0.5, 0.0), (0.5, 1.0)),
        **overrides,
    )


@pytest.mark.parametrize("night", [False, True])
def test_counts_per_type_match_the_generated_ground_truth(night: bool) -> None:
    config = SceneConfig(frames=60, fps=5, seed=11, night=night, vehicles_per_minute=40)
    clip = generate_clip(config)
    truth = clip.crossings(config.width / 2)
    analyzer = FlowAnalyzer(vertical_line_config(config))
    for index, detections in enumerate(noisy_detections(clip, seed=3)):
        state = analyzer.update(detections, (config.height, config.width), index)
    total_truth = sum(truth.values())
    assert total_truth >= 15, truth  # enough traffic for the tolerance below to mean something
    # Stated tolerance: total within 10 % (at least 1 vehicle), each type within 1.
    assert abs(state.total_count - total_truth) <= max(1, round(0.1 * total_truth)), (state.counts, truth)
    for vehicle_type in set(truth) | set(state.counts):
        assert abs(state.counts.get(vehicle_type, 0) - truth.get(vehicle_type, 0)) <= 1, (state.counts, truth)


def test_speeds_are_the_generated_lane_speeds() -> None:
    config = SceneConfig(frames=40, fps=5, seed=5, speed_kmh=(40, 100))
    clip = generate_clip(config)
    analyzer = FlowAnalyzer(vertical_line_config(config))
    fastest_px_per_frame = 100 / 3.6 * config.pixels_per_metre / config.fps
    margin = analyzer.config.speed_window_frames * fastest_px_per_frame
    errors = []
    for index, truths in enumerate(clip.truths):
        detections = [Detection(t.box, 0.9, 0, t.vehicle_type) for t in truths]
        state = analyzer.update(detections, (config.height, config.width), index)
        if index < 10:
            continue
        for track in state.tracks:
            if track.speed_kmh is None or track.box[0] < margin or track.box[2] > config.width - margin:
                continue  # the speed window reaches back to boxes clipped at the frame edge
            [true_speed] = {t.speed_kmh for t in truths if np.allclose(t.box, track.box, atol=1e-6)}
            errors.append(abs(track.speed_kmh - true_speed) / true_speed)
    assert len(errors) > 30
    assert max(errors) < 0.02  # exact boxes: only rounding of the drawing remains


def test_occupancy_and_congestion_levels() -> None:
    config = SceneConfig(frames=30, fps=5, seed=2)
    clip = generate_clip(config)
    top, bottom = clip.road
    region = (
        (0.0, top / config.height),
        (1.0, top / config.height),
        (1.0, bottom / config.height),
        (0.0, bottom / config.height),
    )
    analyzer = FlowAnalyzer(dataclasses.replace(vertical_line_config(config), region=region))
    for index, truths in enumerate(clip.truths):
        detections = [Detection(t.box, 0.9, 0, t.vehicle_type) for t in truths]
        state = analyzer.update(detections, (config.height, config.width), index)
        mask = np.zeros((config.height, config.width), bool)
        for t in truths:
            x1, y1, x2, y2 = (round(v) for v in t.box)
            mask[y1:y2, x1:x2] = True
        expected = mask[top:bottom].mean()
        assert state.occupancy == pytest.approx(expected, abs=0.02)
    assert state.congestion == "free"  # 40-90 km/h, a few percent of the road covered

    slow = SceneConfig(frames=40, fps=5, seed=2, speed_kmh=(5, 8), vehicles_per_minute=600)
    slow_clip = generate_clip(slow)
    analyzer = FlowAnalyzer(vertical_line_config(slow))
    for index, truths in enumerate(slow_clip.truths):
        state = analyzer.update([Detection(t.box, 0.9, 0, t.vehicle_type) for t in truths], (360, 640), index)
    assert state.mean_speed_kmh is not None and state.mean_speed_kmh < 10
    assert state.congestion == "jam"
    assert analyzer.update([], (360, 640)).vehicles_in_view == 0


def test_line_crossing_geometry() -> None:
    a, b = (0.0, 10.0), (100.0, 10.0)
    assert crosses((50, 5), (50, 15), a, b) == 1
    assert crosses((50, 15), (50, 5), a, b) == -1
    assert crosses((50, 5), (50, 8), a, b) == 0
    assert crosses((150, 5), (150, 15), a, b) == 0  # beyond the segment
    assert crosses((50, 5), (50, 10), a, b) == 1  # ends on the line
    assert crosses((50, 10), (50, 5), a, b) == -1


@pytest.mark.parametrize(("first_match_distance", "counted"), [(3.0, 1), (1.5, 0)])
def test_a_small_fast_vehicle_is_followed_from_its_second_frame(first_match_distance: float, counted: int) -> None:
    """A 16x10 motorcycle moving 45 px a frame (2.4 diagonals): no velocity yet after its first frame.

    With the default wider gate for tracks seen once it is one track and counted once; with the
    gate of known-velocity tracks (1.5 diagonals) every frame starts a new track and it is never counted.
    """
    config = FlowConfig(fps=5, counting_line=((0.5, 0.0), (0.5, 1.0)), first_match_distance=first_match_distance)
    analyzer = FlowAnalyzer(config)
    for frame in range(8):
        x = 160.0 + 45.0 * frame
        state = analyzer.update([Detection((x, 100.0, x + 16.0, 110.0), 0.9, 0, "motorcycle")], (360, 640), frame)
    assert state.counts == ({"motorcycle": 1} if counted else {})
    assert len(analyzer.tracker.tracks) == (1 if counted else 1 + 5)  # ended tracks linger max_missed_frames


def yolox_config() -> DetectorConfig:
    return DetectorConfig(input_size=(64, 64), strides=(8, 16, 32), classes={2: "car", 7: "truck"})


def test_yolox_grid_decoding_places_the_box_by_cell_and_stride() -> None:
    cells = 8 * 8 + 4 * 4 + 2 * 2
    output = np.zeros((1, cells, 85), np.float32)
    # Cell (gx=3, gy=2) of stride 8: centre ((0.5 + 3) * 8, (0.25 + 2) * 8), size exp(log 2) * 8 = 16.
    row = 2 * 8 + 3
    output[0, row, :4] = [0.5, 0.25, np.log(2.0), np.log(2.0)]
    output[0, row, 4], output[0, row, 5 + 2] = 0.9, 0.8
    boxes, scores, classes = decode_output(output, yolox_config())
    np.testing.assert_allclose(boxes[row], [20.0, 10.0, 36.0, 26.0], atol=1e-5)
    assert scores[row] == pytest.approx(0.72) and classes[row] == 2
    detections = postprocess(output, Letterbox(0.5, 0.5, 0.0, 0.0), (128, 128), yolox_config())
    assert [(d.vehicle_type, d.box) for d in detections] == [("car", (40.0, 20.0, 72.0, 52.0))]


def test_yolov8_layout_and_class_agnostic_nms_merge_one_vehicle_called_two_things() -> None:
    config = DetectorConfig(input_size=(64, 64), output_layout="yolov8", classes={2: "car", 7: "truck"}, fill=0)
    output = np.zeros((1, 4 + 80, 3), np.float32)
    output[0, :4, 0] = [20, 20, 10, 10]
    output[0, 4 + 2, 0] = 0.9  # car
    output[0, :4, 1] = [21, 20, 10, 10]
    output[0, 4 + 7, 1] = 0.6  # the same vehicle as a truck
    output[0, :4, 2] = [50, 50, 8, 8]
    output[0, 4 + 0, 2] = 0.99  # a person: not a vehicle
    identity = Letterbox(1.0, 1.0, 0.0, 0.0)
    merged = postprocess(output, identity, (64, 64), config)
    assert [d.vehicle_type for d in merged] == ["car"]
    per_class = postprocess(output, identity, (64, 64), dataclasses.replace(config, class_agnostic_nms=False))
    assert sorted(d.vehicle_type for d in per_class) == ["car", "truck"]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


def test_wrong_output_shape_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"yolox output has 10 cells but input \[64, 64\]"):
        decode_output(np.zeros((1, 10, 85), np.float32), yolox_config())


def test_letterbox_top_left_and_centre_map_back_to_the_frame() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    canvas, transform = letterbox(image, DetectorConfig(input_size=(100, 100), letterbox="top-left"))
    assert canvas.shape == (100, 100, 3) and canvas[60, 10, 0] == 114 and transform.pad_y == 0
    _, centred = letterbox(image, DetectorConfig(input_size=(100, 100), letterbox="center"))
    assert centred.pad_y == 25
    np.testing.assert_allclose(centred.to_frame(np.array([[0.0, 25.0, 50.0, 75.0]])), [[0, 0, 100, 100]])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "the frame is empty (0 bytes)"),
        (b"\xff\xd8\xff not really a jpeg", "the frame (21 bytes) is not an image OpenCV can decode (JPEG, PNG, ...)"),
        (np.zeros((4, 4, 2), np.uint8), "a frame array must be (height, width[, 1|3|4]), got shape [4, 4, 2]"),
        (np.full((4, 4, 3), np.nan), "a frame array has NaN or infinite values"),
        (np.zeros((0, 4, 3), np.uint8), "a frame must be 1..8192 pixels per side, got [0, 4]"),
        ("frame.jpg", "a frame must be encoded image bytes or a numpy array, got str"),
    ],
)
def test_malformed_frames_are_invalid_input_with_a_message(frame: object, message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode_frame(frame)
    assert error.value.message == message
    assert error.value.status_code == 400


def test_grey_and_float_frames_are_accepted() -> None:
    assert decode_frame(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert decode_frame(np.full((5, 6, 3), 300.0)).max() == 255


def test_config_from_a_document_and_its_errors() -> None:
    config = pipeline_config_from_dict(
        {"detector": {"model": "d", "classes": {"2": "car"}, "input_size": [320, 320]}, "flow": {"fps": 10}}
    )
    assert config.detector.classes == {2: "car"} and config.detector.input_size == (320, 320)
    with pytest.raises(ConfigError, match=r"detector: unknown keys \['colour'\]"):
        pipeline_config_from_dict({"detector": {"colour": "red"}})
    with pytest.raises(ConfigError, match=r"detector\.output_layout must be one of"):
        pipeline_config_from_dict({"detector": {"output_layout": "ssd"}})
    with pytest.raises(ConfigError, match=r"flow\.counting_line needs two different points"):
        pipeline_config_from_dict({"flow": {"counting_line": [[0, 0], [0, 0]]}})
