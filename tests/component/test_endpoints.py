"""Open Inference Protocol endpoints on a real server: health, metadata, JSON and binary inference."""

from __future__ import annotations

import json
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeaigc.inference import protocol
from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.server.metrics import ServerMetrics
from tests.component.builders import (
    AFFINE_W,
    binary_request,
    reference_run,
    split_binary_response,
)
from tests.component.conftest import RunningServer, running_server


def test_live_and_ready(standard_server: RunningServer) -> None:
    live = standard_server.client.get("/v2/health/live")
    ready = standard_server.client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_server_metadata(standard_server: RunningServer) -> None:
    response = standard_server.client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "edgeaigc"
    assert set(body["extensions"]) == {"model_repository", "binary_tensor_data"}
    assert isinstance(body["version"], str) and body["version"]


def test_model_metadata_comes_from_the_onnx_graph(standard_server: RunningServer) -> None:
    affine = standard_server.client.get("/v2/models/affine")
    pair = standard_server.client.get("/v2/models/pair/versions/1")
    fixed = standard_server.client.get("/v2/models/fixed")
    assert affine.status_code == 200
    assert affine.json() == {
        "name": "affine",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert pair.json()["inputs"] == [
        {"name": "x", "datatype": "INT64", "shape": [-1, 3]},
        {"name": "y", "datatype": "INT64", "shape": [-1, 3]},
    ]
    assert [o["name"] for o in pair.json()["outputs"]] == ["sum", "x_copy"]
    assert fixed.json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [2, 2]}]


def test_model_ready_with_and_without_version(standard_server: RunningServer) -> None:
    plain = standard_server.client.get("/v2/models/affine/ready")
    versioned = standard_server.client.get("/v2/models/affine/versions/1/ready")
    other_version = standard_server.client.get("/v2/models/affine/versions/2/ready")
    assert (plain.status_code, plain.json()) == (200, {"name": "affine", "ready": True})
    assert (versioned.status_code, versioned.json()) == (200, {"name": "affine", "ready": True})
    assert other_version.status_code == 404
    assert other_version.json() == {"error": "model 'affine' version '2' not found in the model repository"}


def test_json_inference_matches_onnxruntime(standard_server: RunningServer, standard_root: Path) -> None:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    response = standard_server.client.post(
        "/v2/models/affine/infer",
        json={"id": "req-7", "inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP32", "data": x.tolist()}]},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("affine", "1", "req-7")
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [5, 3])
    expected = reference_run(standard_root / "affine" / "model.onnx", {"x": x})["y"]
    np.testing.assert_array_equal(np.array(output["data"], dtype=np.float32).reshape(5, 3), expected)
    np.testing.assert_allclose(expected, x @ AFFINE_W + np.array([0.5, -1.0, 2.0]), rtol=1e-5)


def test_versioned_infer_path(standard_server: RunningServer) -> None:
    response = standard_server.client.post(
        "/v2/models/affine/versions/1/infer",
        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]},
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0.5, -1.0, 2.0]


def test_binary_round_trip_matches_onnxruntime(standard_server: RunningServer, standard_root: Path) -> None:
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    body, headers = binary_request({"x": ("FP32", x)}, {"parameters": {"binary_data_output": True}})
    response = standard_server.client.post("/v2/models/affine/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    document, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    [output] = document["outputs"]
    assert output == {"name": "y", "datatype": "FP32", "shape": [64, 3], "parameters": {"binary_data_size": 64 * 3 * 4}}
    received = np.frombuffer(blobs[0], dtype="<f4").reshape(64, 3)
    np.testing.assert_array_equal(received, reference_run(standard_root / "affine" / "model.onnx", {"x": x})["y"])


def test_binary_input_with_json_output(standard_server: RunningServer) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    body, headers = binary_request({"x": ("FP32", x)})
    response = standard_server.client.post("/v2/models/affine/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert "inference-header-content-length" not in response.headers
    assert response.json()["outputs"][0]["data"] == pytest.approx(list((x @ AFFINE_W + [0.5, -1.0, 2.0]).ravel()))


def test_requested_outputs_and_per_output_binary(standard_server: RunningServer) -> None:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    y = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.int64)
    extra = {
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "x_copy"}],
        "parameters": {"binary_data_output": False},
    }
    body, headers = binary_request({"x": ("INT64", x), "y": ("INT64", y)}, extra)
    response = standard_server.client.post("/v2/models/pair/infer", content=body, headers=headers)
    assert response.status_code == 200
    document, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    by_name = {output["name"]: output for output in document["outputs"]}
    assert by_name["x_copy"]["data"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(np.frombuffer(blobs[0], dtype="<i8").reshape(2, 3), x + y)

    only_sum = standard_server.client.post(
        "/v2/models/pair/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]},
                {"name": "y", "shape": [1, 3], "datatype": "INT64", "data": [2, 2, 2]},
            ],
            "outputs": [{"name": "sum"}],
        },
    )
    assert [output["name"] for output in only_sum.json()["outputs"]] == ["sum"]
    assert only_sum.json()["outputs"][0]["data"] == [3, 3, 3]


@pytest.mark.parametrize(
    ("model", "datatype", "shape", "data"),
    [
        ("flags", "BOOL", [3], [True, False, True]),
        ("halves", "FP16", [2, 2], [0.5, -1.5, 2.0, 65504.0]),
        ("strings", "BYTES", [2], ["car", "bus é"]),
    ],
)
def test_other_datatypes_round_trip_as_json(
    standard_server: RunningServer, model: str, datatype: str, shape: list[int], data: list[object]
) -> None:
    response = standard_server.client.post(
        f"/v2/models/{model}/infer",
        json={"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]},
    )
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output == {"name": "output", "datatype": datatype, "shape": shape, "data": data}


def test_bytes_and_bool_round_trip_as_binary(standard_server: RunningServer) -> None:
    words = [b"truck", b"", "motorbike \u00e9".encode()]
    raw_words = b"".join(struct.pack("<I", len(word)) + word for word in words)
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw_words)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = standard_server.client.post(
        "/v2/models/strings/infer",
        content=header + raw_words,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    _, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    assert blobs == [raw_words]

    flags = np.array([True, False, False, True])
    body, headers = binary_request({"input": ("BOOL", flags)}, {"parameters": {"binary_data_output": True}})
    response = standard_server.client.post("/v2/models/flags/infer", content=body, headers=headers)
    _, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    assert blobs == [bytes([1, 0, 0, 1])]


def test_client_codec_talks_to_the_server(standard_server: RunningServer) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for binary in (False, True):
        encoded = protocol.encode_infer_request({"x": x}, binary_data=binary, binary_data_output=binary)
        response = standard_server.client.post("/v2/models/affine/infer", content=encoded.body, headers=encoded.headers)
        assert response.status_code == 200
        outputs = protocol.decode_infer_response(response.content, response.headers.get(protocol.HEADER_CONTENT_LENGTH))
        np.testing.assert_allclose(outputs["y"], x @ AFFINE_W + np.array([0.5, -1.0, 2.0]), rtol=1e-6)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),  # sent as a view of the array
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous: copied
        np.arange(6, dtype=">f4"),  # big-endian: converted
        np.array([True, False, True]),
        np.arange(4, dtype=np.float16),
    ],
    ids=["contiguous", "transposed", "big-endian", "bool", "fp16"],
)
def test_binary_outputs_in_parts_equal_the_joined_encoding(array: np.ndarray) -> None:
    request = protocol.parse_infer_request(
        json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [0]}]}).encode()
    )
    request = protocol.InferRequest(request.id, request.inputs, None, binary_data_output=True)
    encoded = protocol.encode_infer_response("m", "1", {"y": array}, request)
    datatype = protocol.datatype_of(array)
    assert encoded.parts[1:] == (protocol.encode_binary_tensor(array, datatype),)
    assert encoded.body_length == len(encoded.body)
    decoded = protocol.decode_infer_response(encoded.body, str(encoded.json_length))
    np.testing.assert_array_equal(decoded["y"], array)


def _strict_json(body: bytes) -> Any:
    """Parse as strict JSON parsers do (browsers, Go, Java): bare NaN or Infinity is an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(body, parse_constant=refuse)


def test_non_finite_floats_go_as_text_in_strict_json_and_come_back_exactly() -> None:
    array = np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    encoded = protocol.encode_infer_response("m", "1", {"y": array})
    assert _strict_json(encoded.body)["outputs"][0]["data"] == [1.5, "NaN", "Infinity", "-Infinity"]
    np.testing.assert_array_equal(protocol.decode_infer_response(encoded.body, None)["y"], array)
    request = protocol.encode_infer_request({"x": array}, binary_data=False)
    assert _strict_json(request.body)
    np.testing.assert_array_equal(protocol.parse_infer_request(request.body).inputs[0].data, array)
    # What Python's json module writes (bare NaN) is still read, as before.
    legacy = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [NaN, 1.0]}]}'
    assert np.isnan(protocol.parse_infer_request(legacy).inputs[0].data[0])


@pytest.mark.parametrize("data", [["nan", 1.0], ["NaN", True], [[1.0], "x"]])
def test_other_text_in_float_data_is_400(data: list[Any]) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": data}]}).encode()
    with pytest.raises(InvalidInput):
        protocol.parse_infer_request(body)


def test_server_answers_non_finite_outputs_as_strict_json(standard_server: RunningServer) -> None:
    response = standard_server.client.post(
        "/v2/models/fixed/infer",
        json={"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": ["NaN", 1, "-Infinity", 2.5]}]},
    )
    assert response.status_code == 200, response.text
    assert _strict_json(response.content)["outputs"][0]["data"] == ["NaN", 1.0, "-Infinity", 2.5]


def test_concurrent_requests_to_several_models(standard_server: RunningServer) -> None:
    def call(index: int) -> tuple[int, object]:
        if index % 2:
            response = standard_server.client.post(
                "/v2/models/affine/infer",
                json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [index, 0, 0, 0]}]},
            )
        else:
            response = standard_server.client.post(
                "/v2/models/flags/infer",
                json={"inputs": [{"name": "input", "shape": [1], "datatype": "BOOL", "data": [True]}]},
            )
        return response.status_code, response.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(16)))
    for index, (status, data) in enumerate(results):
        assert status == 200
        if index % 2:
            assert data == pytest.approx(list(np.array([index, 0, 0, 0], dtype=np.float32) @ AFFINE_W + [0.5, -1, 2]))
        else:
            assert data == [True]


class ThreadRecordingMetrics(ServerMetrics):
    """Records which thread each onnxruntime run happened on."""

    def __init__(self) -> None:
        super().__init__("edge", process_metrics=False)
        self.threads: list[str] = []

    def observe_inference(self, model: str, seconds: float, requests: int) -> None:
        self.threads.append(threading.current_thread().name)
        super().observe_inference(model, seconds, requests)


def test_onnxruntime_runs_off_the_event_loop(tmp_path: Path, standard_root: Path) -> None:
    metrics = ThreadRecordingMetrics()
    with running_server(standard_root, metrics=metrics) as server:
        response = server.client.post(
            "/v2/models/affine/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        )
        assert response.status_code == 200
    assert metrics.threads and all(name.startswith("onnxruntime") for name in metrics.threads)


def test_large_json_request_and_response(standard_root: Path) -> None:
    # Over 1 MiB of JSON in and 100k output elements out: decoded and encoded off the event loop.
    x = np.random.default_rng(2).normal(size=(40_000, 4)).astype(np.float32)
    with running_server(standard_root, max_request_bytes=16 * 2**20) as server:
        response = server.client.post(
            "/v2/models/affine/infer",
            json={"inputs": [{"name": "x", "shape": [40_000, 4], "datatype": "FP32", "data": x.ravel().tolist()}]},
        )
        assert len(response.request.content) > 2**20
        assert response.status_code == 200
    [output] = response.json()["outputs"]
    expected = reference_run(standard_root / "affine" / "model.onnx", {"x": x})["y"]
    np.testing.assert_array_equal(np.array(output["data"], dtype=np.float32).reshape(40_000, 3), expected)
