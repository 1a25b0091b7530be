"""ONNX models for the serving benchmarks: generated stand-ins of the demo models' cost, sessions, example inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def standin_detector(path: Path) -> Path:
    """A YOLO-like convolutional graph of about YOLOX-Nano's cost (~1.5 GFLOPs at 416x416), random weights."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    channels = [(3, 16, 2), (16, 32, 2), (32, 64, 2), (64, 128, 1), (128, 128, 1)]
    previous = "images"
    for i, (cin, cout, stride) in enumerate(channels):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (cin * 9)) ** 0.5).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    head = (rng.standard_normal((85, 128, 1, 1)) * 0.05).astype(np.float32)
    weights.append(numpy_helper.from_array(head, "head"))
    weights.append(numpy_helper.from_array(np.array([1, 85, -1], dtype=np.int64), "flat"))
    nodes += [
        helper.make_node("Conv", [previous, "head"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Reshape", ["scores", "flat"], ["flat_scores"]),
        helper.make_node("Transpose", ["flat_scores"], ["output"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2704, 85])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def standin_classifier(path: Path, size: int, widths: Sequence[int], classes: int = 5) -> Path:
    """A small CNN image classifier ``[N, 3, size, size] -> [N, classes]`` with random weights."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(1)
    nodes, weights = [], []
    previous, cin = "input", 3
    for i, cout in enumerate(widths):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2 / (cin * 9)) ** 0.5).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[2, 2]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous, cin = f"r{i}", cout
    weights.append(numpy_helper.from_array((rng.standard_normal((cin, classes)) * 0.1).astype(np.float32), "fc"))
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("MatMul", ["features", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def session(path: Path, intra_op_threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def example_input(sess: Any) -> dict[str, np.ndarray]:
    """Uniform noise of each input's shape (dynamic dims 1); these models cost the same whatever the content."""
    feed = {}
    for node in sess.get_inputs():
        shape = [dim if isinstance(dim, int) else 1 for dim in node.shape]
        feed[node.name] = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)
    return feed
