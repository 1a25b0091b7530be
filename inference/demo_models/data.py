"""Data of the demo models: scene seeds, the models' pipeline configurations, training frames and crops.

Everything here is numpy and OpenCV (no torch), so that the evaluation can use it without torch.

**Seeds.** Scene seeds of training and held-out data never coincide: training scenes use even
seeds and held-out scenes odd ones (:func:`scene_seed`), so a held-out scene (its lane speeds,
vehicles, colours and timings) was never seen in training.

**Training scenes** vary what the deployed camera keeps fixed — lanes (2, 4 or 6), scale (6.5-9.5
pixels per metre), traffic density, brightness, camera grain and JPEG compression — so that the
models learn vehicles rather than one layout. **Held-out scenes** are the generator's defaults
(4 lanes, 8 pixels per metre, 60 vehicles per lane and minute, grain 4), which is what
``edgeaigc camera --generated`` plays.

**Preprocessing** goes through the pipeline's own :func:`~edgeaigc.inference.pipeline.image.letterbox`,
:func:`~edgeaigc.inference.pipeline.image.crop` and :func:`~edgeaigc.inference.pipeline.image.to_tensor`
with the configurations the build writes (:func:`detector_config`, :func:`classifier_config`), so the
models are trained on exactly the tensors they are served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edgeaigc.inference.pipeline.config import ClassifierConfig, DetectorConfig, FlowConfig
from edgeaigc.inference.pipeline.image import Letterbox, crop, letterbox
from edgeaigc.inference.pipeline.scenes import SceneConfig, SceneGenerator, VehicleTruth

#: Vehicle types in output order: the types the scene generator draws, and the default labels of
#: :class:`~edgeaigc.inference.pipeline.config.ClassifierConfig`.
VEHICLE_TYPES: tuple[str, ...] = ("car", "van", "bus", "truck", "motorcycle")
#: A vehicle showing less than this many pixels of its width (entering or leaving the frame) is
#: neither a target nor an error: training ignores it and evaluation neither requires nor penalises it.
MIN_VISIBLE_PX = 8.0
#: Detector input (height, width) and its single output stride.
DETECTOR_INPUT: tuple[int, int] = (192, 320)
DETECTOR_STRIDE = 8
#: Classifier input (height, width): vehicles are wide, the crop keeps its aspect ratio.
CLASSIFIER_INPUT: tuple[int, int] = (32, 64)
#: Model names in the repository the build writes.
DETECTOR_NAMES = {"day": "det-demo-day", "night": "det-demo-night"}
CLASSIFIER_NAME = "cls-demo"
_SEED_STRIDE = 1_000_003


def scene_seed(seed: int, index: int, held_out: bool) -> int:
    """Seed of the ``index``-th scene of a build with ``seed``: even for training, odd for held-out data."""
    if seed < 0 or not 0 <= index < _SEED_STRIDE:
        raise ValueError(f"seed must be >= 0 and index in [0, {_SEED_STRIDE}), got {seed}, {index}")
    return 2 * (seed * _SEED_STRIDE + index) + (1 if held_out else 0)


def detector_config(model: str, score_threshold: float = 0.3) -> DetectorConfig:
    """How the pipeline calls a demo detector (``model``: its name at a server, or an .onnx path)."""
    return DetectorConfig(
        model=model,
        input_name="images",
        input_size=DETECTOR_INPUT,
        letterbox="top-left",
        fill=114,
        channel_order="bgr",
        scale=1.0 / 255.0,
        output_layout="yolov5",
        strides=(DETECTOR_STRIDE,),  # informative only: the yolov5 layout comes decoded
        score_threshold=score_threshold,
        nms_iou=0.45,
        class_agnostic_nms=True,
        classes=dict(enumerate(VEHICLE_TYPES)),
        min_box_pixels=4.0,
    )


def classifier_config(model: str) -> ClassifierConfig:
    """How the pipeline calls the demo classifier: centred letterbox, so a crop keeps its aspect ratio."""
    return ClassifierConfig(
        model=model,
        input_name="input",
        input_size=CLASSIFIER_INPUT,
        letterbox="center",
        fill=0,
        channel_order="rgb",
        scale=1.0 / 255.0,
        labels=VEHICLE_TYPES,
        softmax=True,
        min_confidence=0.5,
        crop_padding=0.1,
    )


def flow_config(scene: SceneConfig) -> FlowConfig:
    """Flow analysis of a generated scene: a vertical counting line through the middle of the frame."""
    return FlowConfig(
        fps=scene.fps, metres_per_pixel=1.0 / scene.pixels_per_metre, counting_line=((0.5, 0.0), (0.5, 1.0))
    )


def default_scene(seed: int, night: bool, frames: int, fps: float = 5.0) -> SceneConfig:
    """The generator's default scene (what ``edgeaigc camera --generated`` plays) with scene seed ``seed``."""
    return SceneConfig(frames=frames, fps=fps, night=night, seed=seed)


def held_out_scene(seed: int, index: int, night: bool, frames: int, fps: float = 5.0) -> SceneConfig:
    """The ``index``-th held-out scene of a build with ``seed``: the generator's defaults with a held-out seed."""
    return default_scene(scene_seed(seed, index, held_out=True), night, frames, fps)


def training_scene(rng: np.random.Generator, seed: int, index: int, night: bool, frames: int) -> SceneConfig:
    """A training scene with randomised layout and density, drawn without grain (:class:`NoiseBank` adds it)."""
    return SceneConfig(
        lanes=int(rng.choice([2, 4, 4, 6])),
        pixels_per_metre=float(rng.uniform(6.5, 9.5)),
        vehicles_per_minute=float(rng.uniform(20.0, 100.0)),
        night=night,
        noise=0.0,
        frames=frames,
        fps=5.0,
        seed=scene_seed(seed, index, held_out=False),
    )


def is_visible(truth: VehicleTruth) -> bool:
    """Whether enough of the vehicle is in view to be detected (see :data:`MIN_VISIBLE_PX`)."""
    return truth.box[2] - truth.box[0] >= MIN_VISIBLE_PX


def fully_visible(truth: VehicleTruth, width: int) -> bool:
    return truth.box[0] > 0.5 and truth.box[2] < width - 0.5


class NoiseBank:
    """Camera grain, cheaply: windows of a few pre-drawn Gaussian fields, at a random offset and strength.

    The scene generator's own grain draws a fresh field per frame, which costs more than a
    training step's share of time; a random window of a larger field has the same distribution.
    """

    def __init__(self, rng: np.random.Generator, height: int, width: int, fields: int = 3, margin: int = 64) -> None:
        self.rng = rng
        self.height, self.width, self.margin = height, width, margin
        self.fields = rng.standard_normal((fields, height + margin, width + margin, 3), dtype=np.float32)

    def add(self, frame: np.ndarray, std: float) -> np.ndarray:
        height, width = frame.shape[:2]
        if (height, width) != (self.height, self.width):
            raise ValueError(f"the bank draws grain for {self.height}x{self.width} frames, got {height}x{width}")
        k = int(self.rng.integers(len(self.fields)))
        dy, dx = (int(v) for v in self.rng.integers(0, self.margin + 1, size=2))
        grain = self.fields[k, dy : dy + height, dx : dx + width]
        return np.clip(frame.astype(np.float32) + grain * np.float32(std), 0, 255).astype(np.uint8)


class TrainingFrames:
    """An endless stream of training frames and their ground truth, from ever new random scenes.

    Each scene yields ``frames_per_scene`` frames at random times, then the next scene is drawn.
    Frames get a random gain and offset, grain of random strength and, sometimes, a JPEG round trip.

    Args:
        seed: the build's seed; scene seeds follow :func:`scene_seed` from ``first_scene`` on.
        night: dark scenes, or day scenes.
        stream: a number that separates the random draws of several streams of one build.
        first_scene: index of the first scene (streams of one build use disjoint ranges).
    """

    def __init__(
        self,
        seed: int,
        night: bool,
        stream: int,
        first_scene: int = 0,
        frames_per_scene: int = 6,
        scene_frames: int = 80,
        jpeg_probability: float = 0.3,
    ) -> None:
        self.seed = seed
        self.night = night
        self.rng = np.random.default_rng([seed, stream])
        self.frames_per_scene = frames_per_scene
        self.scene_frames = scene_frames
        self.jpeg_probability = jpeg_probability
        self.next_scene = first_scene
        self.scenes_drawn = 0
        self.noise = NoiseBank(self.rng, SceneConfig.height, SceneConfig.width)
        self._generator: SceneGenerator | None = None
        self._left = 0

    def next(self) -> tuple[np.ndarray, list[VehicleTruth]]:
        if self._generator is None or self._left == 0:
            config = training_scene(self.rng, self.seed, self.next_scene, self.night, self.scene_frames)
            self._generator = SceneGenerator(config)
            self.next_scene += 1
            self.scenes_drawn += 1
            self._left = self.frames_per_scene
        self._left -= 1
        frame, truths = self._generator.render(int(self.rng.integers(self.scene_frames)))
        gain = self.rng.uniform(0.85, 1.15)
        offset = self.rng.uniform(-10.0, 10.0) if not self.night else self.rng.uniform(-4.0, 6.0)
        frame = np.clip(frame.astype(np.float32) * np.float32(gain) + np.float32(offset), 0, 255).astype(np.uint8)
        frame = self.noise.add(frame, float(self.rng.uniform(0.0, 8.0)))
        if self.rng.random() < self.jpeg_probability:
            quality = int(self.rng.integers(60, 96))
            _, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            if decoded is not None:  # an encoder round trip that fails leaves the frame as it was
                frame = decoded
        return frame, truths


@dataclass(frozen=True)
class DetectorSample:
    """One frame as the detector sees it: the letterboxed canvas and the vehicles in input pixels."""

    canvas: np.ndarray
    """uint8 BGR, the detector's input size."""
    boxes: np.ndarray
    """[K, 4] x1, y1, x2, y2 in input pixels."""
    classes: np.ndarray
    """[K] index into :data:`VEHICLE_TYPES`."""
    ignore: np.ndarray
    """[K] bool: too little in view (:data:`MIN_VISIBLE_PX`) to be a target."""


def to_input(boxes: np.ndarray, transform: Letterbox) -> np.ndarray:
    """Frame pixels -> input pixels (the inverse of :meth:`Letterbox.to_frame`)."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * transform.ratio_x + transform.pad_x
    out[:, [1, 3]] = out[:, [1, 3]] * transform.ratio_y + transform.pad_y
    return out


def detector_sample(frame: np.ndarray, truths: Sequence[VehicleTruth], spec: DetectorConfig) -> DetectorSample:
    canvas, transform = letterbox(frame, spec)
    boxes = to_input(np.array([t.box for t in truths], dtype=np.float32), transform)
    classes = np.array([VEHICLE_TYPES.index(t.vehicle_type) for t in truths], dtype=np.int64)
    ignore = np.array([not is_visible(t) for t in truths], dtype=bool)
    return DetectorSample(canvas, boxes, classes, ignore)


def jitter_box(
    box: tuple[float, float, float, float], rng: np.random.Generator, amount: float
) -> tuple[float, float, float, float]:
    """Move each edge of ``box`` by up to ``amount`` of the box's size (how far off a detector's box may be)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    dx1, dx2 = rng.uniform(-amount, amount, size=2) * w
    dy1, dy2 = rng.uniform(-amount, amount, size=2) * h
    return (x1 + dx1, y1 + dy1, max(x2 + dx2, x1 + dx1 + 2.0), max(y2 + dy2, y1 + dy1 + 2.0))


def crop_canvas(frame: np.ndarray, box: tuple[float, float, float, float], spec: ClassifierConfig) -> np.ndarray:
    """The classifier's input image for one box, exactly as the pipeline's classifier stage makes it."""
    return letterbox(crop(frame, box, spec.crop_padding), spec)[0]
