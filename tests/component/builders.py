"""Tiny ONNX models the component tests build themselves (onnx.helper), and repository layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
#: Weights of the ``affine`` model: y = x @ W + B.
AFFINE_W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) / 7.0
AFFINE_B = np.array([0.5, -1.0, 2.0], dtype=np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def affine_model(path: Path) -> Path:
    """``y[batch, 3] = x[batch, 4] @ W + B`` (FP32, dynamic batch dimension)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(AFFINE_W, "w"), numpy_helper.from_array(AFFINE_B, "b")],
    )
    return _save(graph, path)


def pair_model(path: Path) -> Path:
    """Two INT64 inputs sharing the batch dim, two outputs: ``sum = x + y`` and ``x_copy = x``."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["sum"]), helper.make_node("Identity", ["x"], ["x_copy"])],
        "pair",
        [
            helper.make_tensor_value_info("x", TensorProto.INT64, ["n", 3]),
            helper.make_tensor_value_info("y", TensorProto.INT64, ["n", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT64, ["n", 3]),
            helper.make_tensor_value_info("x_copy", TensorProto.INT64, ["n", 3]),
        ],
    )
    return _save(graph, path)


def identity_model(path: Path, elem_type: int, shape: list[Any]) -> Path:
    """``output = Identity(input)`` for any element type and shape."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", elem_type, shape)],
        [helper.make_tensor_value_info("output", elem_type, shape)],
    )
    return _save(graph, path)


def write_config(directory: Path, **settings: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(settings))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def standard_repository(root: Path) -> Path:
    """The repository most endpoint tests share: one model per datatype family and shape kind."""
    affine_model(root / "affine" / "model.onnx")
    pair_model(root / "pair" / "model.onnx")
    identity_model(root / "flags" / "model.onnx", TensorProto.BOOL, ["n"])
    identity_model(root / "halves" / "model.onnx", TensorProto.FLOAT16, ["n", 2])
    identity_model(root / "strings" / "model.onnx", TensorProto.STRING, ["n"])
    identity_model(root / "fixed" / "model.onnx", TensorProto.FLOAT, [2, 2])
    return root


def reference_run(model_path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same model called directly through onnxruntime (one intra-op thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def binary_request(
    inputs: dict[str, tuple[str, np.ndarray]], extra: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request built by hand (not with the server's own codec).

    Args:
        inputs: name -> (datatype, array); arrays go as little-endian raw bytes.
        extra: more top-level JSON fields (``outputs``, ``parameters``, ``id``).
    """
    entries = []
    blobs = []
    for name, (datatype, array) in inputs.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        entries.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    header = json.dumps({"inputs": entries, **(extra or {})}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + b"".join(blobs), headers


def split_binary_response(body: bytes, header_length: int) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON header of a binary response and the raw bytes of each binary output, in order."""
    document = json.loads(body[:header_length])
    blobs = []
    offset = header_length
    for output in document["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs.append(body[offset : offset + size])
            offset += size
    assert offset == len(body), "binary response has bytes that no output accounts for"
    return document, blobs


def constant_detector_model(path: Path, rows: np.ndarray, size: int = 64) -> Path:
    """A "detector" in the yolov5 layout whose output is always ``rows`` ``[N, 5 + C]`` (input ignored).

    The input still flows through the graph (``output = rows + 0 * mean(images)``), so a wrong
    input shape or datatype is refused as for any model.
    """
    constant = rows.astype(np.float32)[None]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["rows", "nothing"], ["output"]),
        ],
        "constant_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(constant.shape))],
        [numpy_helper.from_array(constant, "rows"), numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    return _save(graph, path)


def colour_classifier_model(path: Path) -> Path:
    """``logits[n] = (mean red, mean blue)`` of an RGB crop ``[n, 3, 8, 8]``: a classifier whose answer is known."""
    weights = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=np.float32) * 4.0
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["means", "w"], ["logits"]),
        ],
        "colour_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(weights, "w")],
    )
    return _save(graph, path)
