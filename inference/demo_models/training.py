"""Training of the demo models: one loop with a wall-clock cap, and the detector's and classifier's set-ups.

**Schedule.** AdamW; the learning rate warms up linearly, then follows a cosine from the base
rate down to 5 % of it along the planned steps. If the run's pace says the wall-clock cap
would cut it short (checked from 5 % of the steps on), the schedule follows the clock from then
on instead — progress ``max(step / steps, elapsed / budget)`` — so that a slow machine still
ends at a low learning rate rather than half way down the cosine; such a run is marked
``time_limited``.

**Determinism.** All randomness flows from the build's seed (numpy generators for the scenes
and sampling, ``torch.manual_seed`` for the weights), and the schedule depends on the step
only. With the same seed, settings, torch version and thread count on the same CPU, a build
gives bit-identical ONNX files (tested); CPU kernels may round differently on another CPU type
or with another number of threads. A run marked ``time_limited`` depended on the clock and is
not reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edgeaigc.inference.demo_models import classifier as cls
from edgeaigc.inference.demo_models import detector as det
from edgeaigc.inference.demo_models.data import (
    DETECTOR_STRIDE,
    VEHICLE_TYPES,
    TrainingFrames,
    classifier_config,
    detector_config,
    detector_sample,
)
from edgeaigc.inference.pipeline.detect import Detector
from edgeaigc.inference.pipeline.image import to_tensor

#: First scene index of each training stream (disjoint ranges of :func:`~.data.scene_seed`).
FIRST_SCENE = {"det-day": 0, "det-night": 200_000, "cls": 400_000}


@dataclass
class TrainingResult:
    """How a model's training went (written to the report)."""

    steps_planned: int
    steps_done: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0
    """Of ``seconds``: rendering and preparing data."""
    time_limited: bool = False
    """The wall-clock cap shaped the run: its schedule followed the clock, or it stopped early (not reproducible)."""
    final_loss: float | None = None
    """Exponential moving average (0.95) of the loss at the end."""
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, smoothed loss) about 20 times along the run."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["seconds"] = round(self.seconds, 1)
        document["data_seconds"] = round(self.data_seconds, 1)
        document["final_loss"] = None if self.final_loss is None else round(self.final_loss, 4)
        document["loss_curve"] = [[s, round(v, 4)] for s, v in self.loss_curve]
        return document


def learning_rate(base: float, progress: float, step: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``base`` to 5 % of it as ``progress`` goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(warmup, 1))
    cosine = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return base * warm * cosine


def run_training(
    model: torch.nn.Module,
    loss_of_step: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    result: TrainingResult,
    budget_s: float,
    base_lr: float,
    description: str,
    progress: bool,
    warmup: int = 50,
    weight_decay: float = 1e-4,
    clip_norm: float = 10.0,
    started: float | None = None,
) -> None:
    """Train ``model`` for ``result.steps_planned`` steps or until ``budget_s`` seconds since ``started``."""
    started = time.perf_counter() if started is None else started
    optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=weight_decay)
    smoothed: float | None = None
    steps = result.steps_planned
    every = max(steps // 20, 1)
    model.train()
    loop_started = time.perf_counter()
    check_from = max(steps // 20, 10)
    with tqdm(total=steps, desc=description, disable=not progress, leave=True, dynamic_ncols=True) as bar:
        for step in range(steps):
            now = time.perf_counter()
            elapsed = now - started
            if elapsed >= budget_s:
                result.time_limited = True
                break
            if not result.time_limited and step >= check_from:
                projected = (loop_started - started) + (now - loop_started) / step * steps
                result.time_limited = projected > budget_s
            progress_made = max(step / steps, elapsed / budget_s) if result.time_limited else step / steps
            lr = learning_rate(base_lr, progress_made, step, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = loss_of_step(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()
            value = loss.item()
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            result.steps_done = step + 1
            if step % every == 0 or step == steps - 1:
                result.loss_curve.append((step + 1, smoothed))
            bar.set_postfix({"loss": f"{smoothed:.3f}", **{k: f"{v:.3f}" for k, v in parts.items()}}, refresh=False)
            bar.update(1)
    model.eval()
    result.final_loss = smoothed
    result.seconds = time.perf_counter() - started


def train_detector(
    seed: int,
    night: bool,
    steps: int,
    budget_s: float,
    batch_size: int = 16,
    base_lr: float = 2e-3,
    progress: bool = True,
) -> tuple[det.TinyDetector, TrainingResult]:
    """A detector trained on freshly rendered day (or night) frames of random training scenes."""
    started = time.perf_counter()
    torch.manual_seed(seed * 4 + (1 if night else 0))
    spec = detector_config("training")
    height, width = spec.input_size
    grid_size = (height // DETECTOR_STRIDE, width // DETECTOR_STRIDE)
    cells = det.grid(height, width)
    model = det.TinyDetector(len(VEHICLE_TYPES)).to(memory_format=torch.channels_last)
    stream = "det-night" if night else "det-day"
    frames = TrainingFrames(seed, night, stream=10 + (1 if night else 0), first_scene=FIRST_SCENE[stream])
    result = TrainingResult(steps_planned=steps)

    def loss_of_step(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        data_started = time.perf_counter()
        samples = [detector_sample(*frames.next(), spec) for _ in range(batch_size)]
        batch = det.make_batch(samples, to_tensor([s.canvas for s in samples], spec), grid_size)
        result.data_seconds += time.perf_counter() - data_started
        return det.detector_loss(model(batch.images), batch, cells)

    description = f"detector {'night' if night else 'day'}"
    run_training(model, loss_of_step, result, budget_s, base_lr, description, progress, started=started)
    result.extra = {"batch_size": batch_size, "frames_seen": result.steps_done * batch_size}
    result.extra["scenes_seen"] = frames.scenes_drawn
    return model, result


def train_classifier(
    seed: int,
    frames: int,
    steps: int,
    budget_s: float,
    batch_size: int = 128,
    base_lr: float = 2e-3,
    progress: bool = True,
    detectors: Mapping[bool, Detector] | None = None,
) -> tuple[cls.TinyClassifier, TrainingResult]:
    """A classifier trained on crops of ``frames`` rendered frames (half day, half night).

    ``detectors`` (night -> the built ONNX detector): add crops of their boxes (see :func:`.classifier.render_crops`).
    """
    started = time.perf_counter()
    torch.manual_seed(seed * 4 + 2)
    spec = classifier_config("training")
    result = TrainingResult(steps_planned=steps)
    with tqdm(total=frames, desc="classifier crops", disable=not progress, leave=True, dynamic_ncols=True) as bar:
        canvases, classes, from_detectors = cls.render_crops(
            seed, frames, spec, FIRST_SCENE["cls"], stream=20, detectors=detectors, progress=bar.update
        )
    result.data_seconds = time.perf_counter() - started
    if len(classes) == 0:
        raise ValueError(f"{frames} rendered frames held no vehicle to train the classifier on")
    weights = cls.class_weights(classes, len(VEHICLE_TYPES))
    criterion = torch.nn.CrossEntropyLoss(weight=weights)
    model = cls.TinyClassifier(len(VEHICLE_TYPES))
    rng = np.random.default_rng([seed, 30])
    order: list[int] = []

    def loss_of_step(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal order
        if len(order) < batch_size:
            order = order + rng.permutation(len(classes)).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        images = torch.from_numpy(to_tensor([canvases[i] for i in chosen], spec))
        logits = model(images)
        loss = criterion(logits, torch.from_numpy(classes[chosen]))
        accuracy = (logits.argmax(dim=1) == torch.from_numpy(classes[chosen])).float().mean().item()
        return loss, {"acc": accuracy}

    run_training(model, loss_of_step, result, budget_s, base_lr, "classifier", progress, started=started)
    counts = np.bincount(classes, minlength=len(VEHICLE_TYPES))
    result.extra = {
        "batch_size": batch_size,
        "training_frames": frames,
        "training_crops": len(classes),
        "crops_of_detector_boxes": from_detectors,
        "crops_per_class": {name: int(n) for name, n in zip(VEHICLE_TYPES, counts, strict=True)},
        "epochs": round(result.steps_done * batch_size / len(classes), 2),
    }
    return model, result
