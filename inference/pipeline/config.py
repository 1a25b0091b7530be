"""Configuration of the traffic pipeline: which detector and classifier, how to call them, what to measure.

Everything a user needs to drop in their own model lives here, as plain dataclasses that load
from a YAML or JSON document (:func:`load_pipeline_config`). Example (YOLOX-Nano, COCO)::

    detector:
      model: yolox_nano            # model name at the gateway/server, or a path to an .onnx file
      input_size: [416, 416]       # height, width
      letterbox: top-left          # top-left | center | stretch
      fill: 114
      channel_order: bgr           # bgr | rgb
      scale: 1.0                   # pixel * scale, then (x - mean) / std
      layout: yolox                # yolox (raw grid outputs) | yolov5 | yolov8
      strides: [8, 16, 32]
      score_threshold: 0.3
      nms_iou: 0.45
      class_agnostic_nms: true
      classes: {2: car, 3: motorcycle, 5: bus, 7: truck}
    classifier: null               # or model, input_size, labels, ...
    flow:
      fps: 25
      metres_per_pixel: 0.05
      counting_line: [[0.0, 0.55], [1.0, 0.55]]   # fractions of width and height
      region: [[0, 0.3], [1, 0.3], [1, 1], [0, 1]]  # polygon for occupancy, fractions

Output layouts of :class:`DetectorConfig`:

- ``yolox``: ``[1, N, 5 + C]`` straight from the YOLOX head, not decoded: per grid cell raw
  x/y offsets, raw log width/height, objectness and class probabilities (both after sigmoid);
  cells of each stride in ``strides`` order, row-major. Decoded here:
  ``cx = (tx + gx) * s``, ``w = exp(tw) * s``; score = objectness x class probability.
- ``yolov5``: ``[1, N, 5 + C]`` already decoded: cx, cy, w, h in input pixels, objectness,
  class probabilities (YOLOv5/v7, and YOLOX exported with decoding in the graph).
- ``yolov8``: ``[1, 4 + C, N]``: cx, cy, w, h in input pixels then class probabilities, no
  objectness (Ultralytics YOLOv8/v11 exports).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

LETTERBOX_MODES = ("top-left", "center", "stretch")
CHANNEL_ORDERS = ("bgr", "rgb")
DETECTOR_LAYOUTS = ("yolox", "yolov5", "yolov8")
CONGESTION_LEVELS = ("free", "moderate", "heavy", "jam")


class ConfigError(ValueError):
    """A pipeline configuration that cannot work; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """How a frame (or a crop) becomes the model's input tensor."""

    input_size: tuple[int, int] = (416, 416)
    """Height and width of the model input."""
    letterbox: str = "top-left"
    """Keep the aspect ratio and paste at the top-left or the centre of the canvas, or stretch."""
    fill: int = 114
    """Value of the canvas around a letterboxed image."""
    channel_order: str = "bgr"
    """Channel order the model expects (frames are decoded as BGR)."""
    scale: float = 1.0
    """Pixels (0-255) are multiplied by this, e.g. 1/255."""
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Subtracted after scaling, per channel in the model's channel order."""
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Divided by after subtracting the mean."""
    layout: str = "nchw"
    """Tensor layout: nchw or nhwc."""
    input_name: str | None = None
    """Name of the model input (None: ``images`` for detectors, ``input`` for classifiers, or as configured)."""

    def validate(self, where: str) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(f"{where}.input_size must be [height, width] of positive integers")
        if self.letterbox not in LETTERBOX_MODES:
            raise ConfigError(f"{where}.letterbox must be one of {LETTERBOX_MODES}, got {self.letterbox!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConfigError(f"{where}.channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        if self.layout not in ("nchw", "nhwc"):
            raise ConfigError(f"{where}.layout must be nchw or nhwc, got {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise ConfigError(f"{where}.mean and std must have 3 values, std non-zero")


@dataclasses.dataclass(frozen=True)
class DetectorConfig(ImageInput):
    """A YOLO-style ONNX detector (see the module docstring for the layouts)."""

    model: str = "yolox_nano"
    """Model name at the gateway or model server, or the path of an .onnx file (local runs)."""
    output_name: str | None = None
    """Output to read (None: the first)."""
    output_layout: str = "yolox"
    """yolox, yolov5 or yolov8."""
    strides: tuple[int, ...] = (8, 16, 32)
    """Grid strides of the ``yolox`` layout, in output order."""
    score_threshold: float = 0.3
    """Detections scoring below are dropped (score = objectness x class probability)."""
    nms_iou: float = 0.45
    """Boxes overlapping a better one by more than this IoU are dropped."""
    class_agnostic_nms: bool = True
    """NMS across all vehicle classes (a detector often calls one van both car and truck)."""
    classes: Mapping[int, str] = dataclasses.field(
        default_factory=lambda: {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
    )
    """Class id of the detector -> vehicle type; other classes are ignored."""
    max_detections: int = 100
    """At most this many boxes per frame, best first."""
    min_box_pixels: float = 4.0
    """Boxes narrower or lower than this (in frame pixels) are dropped."""

    def validate(self, where: str = "detector") -> None:
        super().validate(where)
        if self.output_layout not in DETECTOR_LAYOUTS:
            raise ConfigError(f"{where}.output_layout must be one of {DETECTOR_LAYOUTS}, got {self.output_layout!r}")
        if not self.strides or any(s < 1 for s in self.strides):
            raise ConfigError(f"{where}.strides must be positive integers")
        if not 0 <= self.score_threshold <= 1 or not 0 < self.nms_iou <= 1:
            raise ConfigError(f"{where}.score_threshold must be in [0, 1] and nms_iou in (0, 1]")
        if not self.classes:
            raise ConfigError(f"{where}.classes must map at least one class id to a vehicle type")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(ImageInput):
    """An ONNX image classifier run on each detection's crop: ``[N, 3, H, W]`` -> ``[N, K]`` scores."""

    model: str = "vehicle_classifier"
    """Model name at the gateway or model server, or the path of an .onnx file."""
    labels: tuple[str, ...] = ("car", "van", "bus", "truck", "motorcycle")
    """Vehicle type of each output index."""
    output_name: str | None = None
    """Output to read (None: the first)."""
    softmax: bool = True
    """Apply a softmax to the outputs (set false when the model already outputs probabilities)."""
    min_confidence: float = 0.5
    """Below this the detector's type is kept."""
    batch: bool = True
    """Send all crops of a frame in one request (the model needs a dynamic first dimension)."""
    crop_padding: float = 0.1
    """Grow each box by this share of its size before cropping."""
    letterbox: str = "stretch"
    input_size: tuple[int, int] = (64, 64)
    fill: int = 0
    channel_order: str = "rgb"
    scale: float = 1.0 / 255.0

    def validate(self, where: str = "classifier") -> None:
        super().validate(where)
        if not self.labels:
            raise ConfigError(f"{where}.labels must name at least one class")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Tracking, counting, speed, occupancy and congestion of one camera."""

    fps: float = 25.0
    """Frames per second of the camera (used when frames carry no timestamp)."""
    metres_per_pixel: float = 0.05
    """Ground distance of one pixel near the counting line."""
    counting_line: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.55), (1.0, 0.55))
    """Two points (fractions of frame width and height); a track crossing it is counted once."""
    region: tuple[tuple[float, float], ...] = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
    """Polygon (fractions) whose share covered by vehicle boxes is the occupancy."""
    iou_threshold: float = 0.2
    """Tracker: least IoU between a track's predicted box and a detection to match them."""
    max_centroid_distance: float = 1.5
    """Tracker: otherwise match centroids closer than this many box diagonals."""
    first_match_distance: float = 3.0
    """Tracker: the same for a track seen once, whose velocity is not known yet (a small, fast vehicle
    moves more than 1.5 of its diagonals between frames at a few frames per second)."""
    max_missed_frames: int = 5
    """Tracker: a track unseen for more frames is ended."""
    min_hits: int = 2
    """Tracker: frames a track needs before it is reported and counted."""
    speed_window_frames: int = 5
    """Speed of a track: displacement over up to this many of its last positions."""
    window_frames: int = 10
    """Speed and occupancy of the congestion level are averaged over this many frames."""
    free_speed_kmh: float = 50.0
    """Congestion from speed: at or above is free, ..."""
    moderate_speed_kmh: float = 30.0
    """... at or above is moderate, ..."""
    heavy_speed_kmh: float = 10.0
    """... at or above is heavy, below is a jam."""
    occupancy_levels: tuple[float, float, float] = (0.15, 0.30, 0.50)
    """Congestion from occupancy: below the first is free, then moderate, heavy, and jam at or above the last."""

    def validate(self, where: str = "flow") -> None:
        if self.fps <= 0 or self.metres_per_pixel <= 0:
            raise ConfigError(f"{where}.fps and metres_per_pixel must be positive")
        if self.max_centroid_distance < 0 or self.first_match_distance < 0:
            raise ConfigError(f"{where}.max_centroid_distance and first_match_distance must be >= 0")
        if len(self.counting_line) != 2 or any(len(p) != 2 for p in self.counting_line):
            raise ConfigError(f"{where}.counting_line must be two [x, y] points")
        if self.counting_line[0] == self.counting_line[1]:
            raise ConfigError(f"{where}.counting_line needs two different points")
        if len(self.region) < 3 or any(len(p) != 2 for p in self.region):
            raise ConfigError(f"{where}.region must be a polygon of at least 3 [x, y] points")
        if not self.free_speed_kmh >= self.moderate_speed_kmh >= self.heavy_speed_kmh >= 0:
            raise ConfigError(f"{where}: free_speed_kmh >= moderate_speed_kmh >= heavy_speed_kmh >= 0")
        levels = self.occupancy_levels
        if len(levels) != 3 or not 0 <= levels[0] <= levels[1] <= levels[2] <= 1:
            raise ConfigError(f"{where}.occupancy_levels must be three increasing shares in [0, 1]")
        if self.max_missed_frames < 0 or self.min_hits < 1 or self.speed_window_frames < 1 or self.window_frames < 1:
            raise ConfigError(f"{where}: max_missed_frames >= 0, min_hits, speed_window_frames, window_frames >= 1")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    classifier: ClassifierConfig | None = None
    flow: FlowConfig = dataclasses.field(default_factory=FlowConfig)

    def validate(self) -> None:
        self.detector.validate()
        if self.classifier is not None:
            self.classifier.validate()
        self.flow.validate()


def _tuples(value: Any) -> Any:
    """JSON/YAML lists -> tuples, recursively (the dataclasses are frozen and hashable)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def _build(cls: type[Any], document: Any, where: str) -> Any:
    if not isinstance(document, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(document) - fields
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(fields)})")
    values = {}
    for key, value in document.items():
        if key == "classes":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.classes must map class ids to vehicle types")
            try:
                value = {int(k): str(v) for k, v in value.items()}
            except ValueError:
                raise ConfigError(f"{where}.classes keys must be integer class ids") from None
        else:
            value = _tuples(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def pipeline_config_from_dict(document: Mapping[str, Any]) -> PipelineConfig:
    """Build and validate a :class:`PipelineConfig`; raise :class:`ConfigError` naming the field."""
    if not isinstance(document, Mapping):
        raise ConfigError("the pipeline configuration must be a mapping")
    unknown = set(document) - {"detector", "classifier", "flow"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} (known: classifier, detector, flow)")
    config = PipelineConfig(
        detector=_build(DetectorConfig, document.get("detector") or {}, "detector"),
        classifier=None
        if document.get("classifier") is None
        else _build(ClassifierConfig, document["classifier"], "classifier"),
        flow=_build(FlowConfig, document.get("flow") or {}, "flow"),
    )
    config.validate()
    return config


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """A pipeline configuration from a YAML or JSON file."""
    text = Path(path).read_text()
    try:
        document = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML/JSON: {error}") from None
    return pipeline_config_from_dict(document or {})


#: YOLOX-Nano (Megvii, COCO-80): BGR, raw 0-255, letterbox at the top-left filled with 114, raw grid outputs.
YOLOX_NANO_COCO = DetectorConfig(
    model="yolox_nano",
    input_name="images",
    input_size=(416, 416),
    letterbox="top-left",
    fill=114,
    channel_order="bgr",
    output_layout="yolox",
    strides=(8, 16, 32),
    score_threshold=0.3,
    nms_iou=0.45,
    class_agnostic_nms=True,
    classes={2: "car", 3: "motorcycle", 5: "bus", 7: "truck"},
)
