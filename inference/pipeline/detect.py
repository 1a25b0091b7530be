"""Vehicle detection with any YOLO-style ONNX detector: letterbox, run, decode, NMS, class mapping.

The model runs through a :class:`~edgeaigc.inference.pipeline.backend.ModelRunner` (in-process
or at a gateway); what its input and output look like is :class:`DetectorConfig`.
:func:`decode_output` and :func:`nms` are pure functions of arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.pipeline.backend import ModelStage
from edgeaigc.inference.pipeline.config import DetectorConfig
from edgeaigc.inference.pipeline.image import Letterbox, decode_frame, letterbox, to_tensor


@dataclass(frozen=True)
class Detection:
    """One vehicle in a frame: box (x1, y1, x2, y2) in frame pixels, score, detector class, vehicle type."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    vehicle_type: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def yolox_grid(input_size: tuple[int, int], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell offsets ``[N, 2]`` (gx, gy) and strides ``[N, 1]`` of a YOLOX head, in output order."""
    height, width = input_size
    grids, expanded = [], []
    for stride in strides:
        rows, cols = height // stride, width // stride
        gy, gx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        expanded.append(np.full((rows * cols, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_output(output: np.ndarray, config: DetectorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``[N, 4]`` (x1, y1, x2, y2 in input pixels), best score ``[N]`` and class ``[N]`` per candidate.

    Raises:
        InvalidInput: the output does not have the configured layout's shape.
    """
    array = np.asarray(output, dtype=np.float32)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise InvalidInput(f"detector output has batch size {array.shape[0]}, expected 1")
        array = array[0]
    if array.ndim != 2:
        raise InvalidInput(f"detector output must be [1, N, K] or [N, K], got shape {list(output.shape)}")
    if config.output_layout == "yolov8":
        array = array.T  # [4 + C, N] -> [N, 4 + C]
        if array.shape[1] < 5:
            raise InvalidInput(f"yolov8 output needs 4 + classes rows, got {array.shape[1]}")
        xywh, scores = array[:, :4], array[:, 4:]
    else:
        if array.shape[1] < 6:
            raise InvalidInput(f"{config.output_layout} output needs 5 + classes columns, got {array.shape[1]}")
        xywh, scores = array[:, :4].copy(), array[:, 5:] * array[:, 4:5]
        if config.output_layout == "yolox":
            grid, strides = yolox_grid(config.input_size, config.strides)
            if grid.shape[0] != array.shape[0]:
                raise InvalidInput(
                    f"yolox output has {array.shape[0]} cells but input {list(config.input_size)} with strides "
                    f"{list(config.strides)} gives {grid.shape[0]}"
                )
            xywh[:, :2] = (xywh[:, :2] + grid) * strides
            xywh[:, 2:] = np.exp(np.minimum(xywh[:, 2:], 20.0)) * strides
    class_ids = scores.argmax(axis=1)
    best = scores[np.arange(scores.shape[0]), class_ids]
    boxes = np.empty_like(xywh)
    boxes[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    return boxes, best, class_ids


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` -> ``[N, M]``."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, classes: np.ndarray | None = None) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first (per class when ``classes`` is given)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    ious = box_iou(boxes, boxes) if len(boxes) else np.zeros((0, 0))
    for index in order:
        if suppressed[index]:
            continue
        keep.append(int(index))
        overlapping = ious[index] > iou_threshold
        if classes is not None:
            overlapping &= classes == classes[index]
        suppressed |= overlapping
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    output: np.ndarray, transform: Letterbox, frame_size: tuple[int, int], config: DetectorConfig
) -> list[Detection]:
    """Raw detector output -> vehicle detections in frame pixels (threshold, class map, NMS, clip)."""
    boxes, scores, class_ids = decode_output(output, config)
    vehicle = np.isin(class_ids, np.fromiter(config.classes, dtype=np.int64)) & (scores >= config.score_threshold)
    boxes, scores, class_ids = boxes[vehicle], scores[vehicle], class_ids[vehicle]
    if len(scores) == 0:
        return []
    boxes = transform.to_frame(boxes)
    height, width = frame_size
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    sizes = boxes[:, 2:] - boxes[:, :2]
    big_enough = (sizes >= config.min_box_pixels).all(axis=1)
    boxes, scores, class_ids = boxes[big_enough], scores[big_enough], class_ids[big_enough]
    keep = nms(boxes, scores, config.nms_iou, None if config.class_agnostic_nms else class_ids)
    keep = keep[: config.max_detections]
    return [
        Detection(
            box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
            score=float(scores[i]),
            class_id=int(class_ids[i]),
            vehicle_type=config.classes[int(class_ids[i])],
        )
        for i in keep
    ]


class Detector(ModelStage[DetectorConfig]):
    """Detects vehicles in frames with ``runner`` configured by ``config``."""

    role = "detector"

    def detect(self, frame: bytes | np.ndarray) -> list[Detection]:
        """Vehicles in one frame (encoded bytes or an array; see :func:`decode_frame`)."""
        return self.detect_image(decode_frame(frame))

    def detect_image(self, image: np.ndarray) -> list[Detection]:
        """Vehicles in a decoded BGR image."""
        canvas, transform = letterbox(image, self.config)
        tensor = to_tensor([canvas], self.config)
        outputs = self.runner.run({self.input_name(): tensor})
        name = self.config.output_name or next(iter(outputs))
        if name not in outputs:
            raise InvalidInput(f"detector '{self.runner.name}' has no output '{name}' (it has {sorted(outputs)})")
        return postprocess(outputs[name], transform, (image.shape[0], image.shape[1]), self.config)
