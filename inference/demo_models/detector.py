"""The demo vehicle detector: a small single-scale, anchor-free (YOLOX-like) CNN; targets, loss, ONNX export.

**Network.** Eight 3x3 convolutions (ReLU, no normalisation layers: batch norm costs more than
the convolutions themselves when training on a CPU) take the 192x320 input to a 24x40 grid at
stride 8; two dilated ones widen the receptive field to about 150 input pixels, enough to see
a whole bus from the cell at its centre. A 1x1 head gives per cell ``5 + C`` raw values: x/y
offset, log width/height, objectness and class logits.

**Decoding** (in training and in the exported graph alike)::

    cx = (gx + 2 * sigmoid(tx) - 0.5) * stride     # the centre may lie up to 1.5 cells away
    w  = exp(min(tw, 6)) * stride

**Targets.** A vehicle is assigned to the cell holding its centre and to the neighbouring cells
(3x3) whose centres lie inside its box; a cell claimed by two vehicles goes to the smaller one.
Vehicles with too little in view (:data:`~.data.MIN_VISIBLE_PX`) are ignored: their cells take
no objectness loss. **Loss** = BCE objectness over all other cells + 5 x (1 - GIoU) + class
cross-entropy over the assigned cells, each divided by the number of assigned cells.

**Export.** The graph outputs ``[batch, cells, 5 + C]`` decoded: cx, cy, w, h in input pixels,
objectness and class probabilities — the pipeline's ``yolov5`` output layout, so
:class:`~edgeaigc.inference.pipeline.config.DetectorConfig` needs no new option.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from edgeaigc.inference.demo_models.data import DETECTOR_STRIDE, DetectorSample

#: Channels of the convolutions (stride 2, 2, 1, 2, 1, 1 dilated 2, 1 dilated 4, 1).
WIDTHS = (16, 24, 24, 48, 48, 64, 64, 64)
BOX_WEIGHT = 5.0
OPSET = 17


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)
    )


class TinyDetector(nn.Module):
    """Raw head outputs ``[B, 5 + C, H / 8, W / 8]`` for an input ``[B, 3, H, W]`` scaled to 0-1."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        w = WIDTHS
        self.num_classes = num_classes
        self.body = nn.Sequential(
            _conv(3, w[0], 2),
            _conv(w[0], w[1], 2),
            _conv(w[1], w[2]),
            _conv(w[2], w[3], 2),
            _conv(w[3], w[4]),
            _conv(w[4], w[5], dilation=2),
            _conv(w[5], w[6], dilation=4),
            _conv(w[6], w[7]),
        )
        self.head = nn.Conv2d(w[7], 5 + num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, std=0.01)
        with torch.no_grad():
            bias = self.head.bias
            assert bias is not None
            bias[4] = -math.log(99.0)  # objectness prior 1 %

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def grid(height: int, width: int, stride: int = DETECTOR_STRIDE) -> torch.Tensor:
    """Cell offsets ``[H/s * W/s, 2]`` (gx, gy), row-major like the flattened head output."""
    gy, gx = torch.meshgrid(torch.arange(height // stride), torch.arange(width // stride), indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float()


def decode(raw: torch.Tensor, cells: torch.Tensor, stride: int = DETECTOR_STRIDE) -> torch.Tensor:
    """Raw head ``[B, 5 + C, h, w]`` -> ``[B, h * w, 5 + C]`` with cx, cy, w, h in input pixels, other columns raw."""
    flat = raw.flatten(2).transpose(1, 2)
    xy = (cells + 2.0 * torch.sigmoid(flat[..., :2]) - 0.5) * stride
    wh = torch.exp(torch.clamp(flat[..., 2:4], max=6.0)) * stride
    return torch.cat([xy, wh, flat[..., 4:]], dim=2)


class ExportedDetector(nn.Module):
    """The detector with decoding in the graph: ``[B, 3, H, W]`` -> ``[B, cells, 5 + C]`` (yolov5 layout)."""

    def __init__(self, detector: TinyDetector, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.detector = detector
        self.cells: torch.Tensor
        self.register_buffer("cells", grid(*input_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        decoded = decode(self.detector(images), self.cells)
        objectness = torch.sigmoid(decoded[..., 4:5])
        probabilities = torch.softmax(decoded[..., 5:], dim=2)
        return torch.cat([decoded[..., :4], objectness, probabilities], dim=2)


@dataclass(frozen=True)
class Targets:
    """Training targets of one frame over its ``cells`` grid cells."""

    objectness: np.ndarray
    """[cells] 1 at assigned cells, else 0."""
    weight: np.ndarray
    """[cells] 0 where a vehicle too little in view lies (no objectness loss), else 1."""
    positive_cells: np.ndarray
    """[P] cell index of each assignment."""
    boxes: np.ndarray
    """[P, 4] x1, y1, x2, y2 (input pixels) of the vehicle assigned to each cell."""
    classes: np.ndarray
    """[P] its class."""


def assign_targets(sample: DetectorSample, grid_size: tuple[int, int], stride: int = DETECTOR_STRIDE) -> Targets:
    """Which cells predict which vehicle (see the module docstring)."""
    rows, cols = grid_size
    owner = np.full((rows, cols), -1, dtype=np.int64)
    weight = np.ones((rows, cols), dtype=np.float32)
    boxes = sample.boxes.reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centres_x = (np.arange(cols) + 0.5) * stride
    centres_y = (np.arange(rows) + 0.5) * stride
    for index in np.argsort(-areas, kind="stable"):  # larger first: smaller vehicles overwrite shared cells
        x1, y1, x2, y2 = boxes[index]
        gx = int(np.clip((x1 + x2) / 2 // stride, 0, cols - 1))
        gy = int(np.clip((y1 + y2) / 2 // stride, 0, rows - 1))
        r0, r1, c0, c1 = max(gy - 1, 0), min(gy + 2, rows), max(gx - 1, 0), min(gx + 2, cols)
        inside_x = (centres_x[c0:c1] > x1) & (centres_x[c0:c1] < x2)
        inside_y = (centres_y[r0:r1] > y1) & (centres_y[r0:r1] < y2)
        mask = inside_y[:, None] & inside_x[None, :]
        mask[gy - r0, gx - c0] = True
        if sample.ignore[index]:
            window = weight[r0:r1, c0:c1]
            window[mask] = 0.0
        else:
            window_owner = owner[r0:r1, c0:c1]
            window_owner[mask] = index
    assigned = owner.reshape(-1)
    positive_cells = np.flatnonzero(assigned >= 0)
    weight_flat = weight.reshape(-1)
    weight_flat[positive_cells] = 1.0
    objectness = np.zeros(rows * cols, dtype=np.float32)
    objectness[positive_cells] = 1.0
    return Targets(
        objectness=objectness,
        weight=weight_flat,
        positive_cells=positive_cells,
        boxes=boxes[assigned[positive_cells]].astype(np.float32),
        classes=sample.classes[assigned[positive_cells]],
    )


@dataclass
class DetectorBatch:
    images: torch.Tensor
    objectness: torch.Tensor
    weight: torch.Tensor
    positive_index: torch.Tensor
    """[P] flat index (image * cells + cell)."""
    boxes: torch.Tensor
    classes: torch.Tensor


def make_batch(samples: Sequence[DetectorSample], tensors: np.ndarray, grid_size: tuple[int, int]) -> DetectorBatch:
    """Stack samples (their input tensors already made by the pipeline's ``to_tensor``)."""
    cells = grid_size[0] * grid_size[1]
    targets = [assign_targets(sample, grid_size) for sample in samples]
    return DetectorBatch(
        images=torch.from_numpy(tensors).contiguous(memory_format=torch.channels_last),
        objectness=torch.from_numpy(np.stack([t.objectness for t in targets])),
        weight=torch.from_numpy(np.stack([t.weight for t in targets])),
        positive_index=torch.from_numpy(
            np.concatenate([t.positive_cells + i * cells for i, t in enumerate(targets)]).astype(np.int64)
        ),
        boxes=torch.from_numpy(np.concatenate([t.boxes for t in targets]).reshape(-1, 4)),
        classes=torch.from_numpy(np.concatenate([t.classes for t in targets]).astype(np.int64)),
    )


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matching rows of two ``[N, 4]`` x1, y1, x2, y2 tensors."""
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - intersection
    iou = intersection / union.clamp(min=1e-6)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def detector_loss(
    raw: torch.Tensor, batch: DetectorBatch, cells: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (objectness, box, class) for a batch."""
    decoded = decode(raw, cells)
    flat = decoded.reshape(-1, decoded.shape[-1])
    positives = max(int(batch.positive_index.numel()), 1)
    objectness = (
        functional.binary_cross_entropy_with_logits(
            decoded[..., 4], batch.objectness, weight=batch.weight, reduction="sum"
        )
        / positives
    )
    if batch.positive_index.numel():
        chosen = flat[batch.positive_index]
        xy, wh = chosen[:, :2], chosen[:, 2:4]
        predicted = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
        box = (1.0 - generalized_iou(predicted, batch.boxes)).sum() / positives
        classes = functional.cross_entropy(chosen[:, 5:], batch.classes, reduction="sum") / positives
    else:
        box = classes = raw.sum() * 0.0
    total = objectness + BOX_WEIGHT * box + classes
    return total, {"obj": objectness.item(), "box": box.item(), "cls": classes.item()}


def export_detector(detector: TinyDetector, input_size: tuple[int, int], path: Path) -> Path:
    """Write the detector with decoding in the graph to ``path`` (input ``images``, output ``output``)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    exported = ExportedDetector(detector.eval(), input_size).eval()
    example = torch.zeros(1, 3, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated upstream but needs no onnxscript (as policy/export.py).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
