"""Frames in, model tensors out: decoding (JPEG/PNG bytes or arrays), letterboxing, normalisation.

Every malformed frame raises :class:`~edgeaigc.inference.errors.InvalidInput` (HTTP 400 where
the pipeline is served) with a message saying what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.pipeline.config import ImageInput

#: Largest frame accepted, in pixels per side (a decoded 8K frame is already 100 MB).
MAX_FRAME_SIDE = 8192


def decode_frame(frame: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A BGR ``uint8`` array of shape ``(height, width, 3)`` from encoded bytes or an array.

    Accepts JPEG/PNG/BMP bytes (anything OpenCV decodes), or an array: ``(H, W, 3)`` BGR,
    ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 4)`` BGRA; ``uint8``, or floats in 0-255.

    Raises:
        InvalidInput: empty or undecodable bytes, or an array of the wrong shape or type.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        raw = np.frombuffer(frame, dtype=np.uint8)
        if raw.size == 0:
            raise InvalidInput("the frame is empty (0 bytes)")
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidInput(f"the frame ({raw.size} bytes) is not an image OpenCV can decode (JPEG, PNG, ...)")
        return image
    if not isinstance(frame, np.ndarray):
        raise InvalidInput(f"a frame must be encoded image bytes or a numpy array, got {type(frame).__name__}")
    image = frame
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidInput(f"a frame array must be (height, width[, 1|3|4]), got shape {list(frame.shape)}")
    if min(image.shape[:2]) < 1 or max(image.shape[:2]) > MAX_FRAME_SIDE:
        raise InvalidInput(f"a frame must be 1..{MAX_FRAME_SIDE} pixels per side, got {list(image.shape[:2])}")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "fiu":
            raise InvalidInput(f"a frame array must be numeric (uint8 or float 0-255), got {image.dtype}")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise InvalidInput("a frame array has NaN or infinite values")
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class Letterbox:
    """How input pixels map back to frame pixels: ``frame = (input - pad) / ratio``."""

    ratio_x: float
    ratio_y: float
    pad_x: float
    pad_y: float

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes ``[N, 4]`` (x1, y1, x2, y2) in input pixels -> frame pixels."""
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.ratio_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.ratio_y
        return out


def letterbox(image: np.ndarray, spec: ImageInput) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` to the model's input size as ``spec`` says; the uint8 canvas and its mapping."""
    height, width = spec.input_size
    source_h, source_w = image.shape[:2]
    if spec.letterbox == "stretch":
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return resized, Letterbox(width / source_w, height / source_h, 0.0, 0.0)
    ratio = min(height / source_h, width / source_w)
    new_w, new_h = max(int(source_w * ratio), 1), max(int(source_h * ratio), 1)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), spec.fill, dtype=np.uint8)
    if spec.letterbox == "center":
        pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    else:
        pad_x = pad_y = 0
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, Letterbox(ratio, ratio, float(pad_x), float(pad_y))


def to_tensor(images: list[np.ndarray], spec: ImageInput) -> np.ndarray:
    """Same-size BGR uint8 images -> one float32 tensor ``[N, 3, H, W]`` (or NHWC) as ``spec`` says."""
    batch = np.stack(images).astype(np.float32)
    if spec.channel_order == "rgb":
        batch = batch[..., ::-1]
    if spec.scale != 1.0:
        batch *= np.float32(spec.scale)
    if any(spec.mean) or any(s != 1.0 for s in spec.std):
        batch = np.divide(
            batch - np.asarray(spec.mean, dtype=np.float32), np.asarray(spec.std, dtype=np.float32), dtype=np.float32
        )
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def crop(image: np.ndarray, box: tuple[float, float, float, float], padding: float) -> np.ndarray:
    """The part of ``image`` inside ``box`` grown by ``padding`` of its size, clipped to the frame."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    grow_x, grow_y = (x2 - x1) * padding, (y2 - y1) * padding
    left, top = max(int(x1 - grow_x), 0), max(int(y1 - grow_y), 0)
    right, bottom = min(int(np.ceil(x2 + grow_x)), width), min(int(np.ceil(y2 + grow_y)), height)
    if right <= left or bottom <= top:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    return image[top:bottom, left:right]
