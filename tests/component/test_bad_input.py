"""Every kind of bad request gets its exact status code and message, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.component.builders import binary_request
from tests.component.conftest import RunningServer

LIMIT = 64 * 1024  # the standard server's --max-request-bytes


def x_input(shape: list[int], datatype: str = "FP32", data: Any = None, name: str = "x") -> dict[str, Any]:
    count = int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype, "data": list(range(count)) if data is None else data}


def infer_json(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"json": {"inputs": list(inputs), **extra}}


def with_header(body: bytes, header_length: str) -> dict[str, Any]:
    return {"content": body, "headers": {"Inference-Header-Content-Length": header_length}}


BINARY_X, BINARY_HEADERS = binary_request({"x": ("FP32", np.zeros((2, 4), dtype=np.float32))})
BINARY_JSON_LENGTH = int(BINARY_HEADERS["Inference-Header-Content-Length"])


def binary_with(entry: dict[str, Any], raw: bytes) -> dict[str, Any]:
    header = json.dumps({"inputs": [entry]}).encode()
    return with_header(header + raw, str(len(header)))


# (id, model, request keyword arguments for httpx, status, exact error message)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "truncated JSON",
        "affine",
        {"content": b'{"inputs": ['},
        400,
        "malformed JSON: Expecting value: line 1 column 13 (char 12)",
    ),
    ("JSON array body", "affine", {"json": [1, 2]}, 400, "the inference request must be a JSON object"),
    ("no inputs", "affine", {"json": {"id": "a"}}, 400, "'inputs' must be a non-empty list of tensors"),
    ("input not an object", "affine", {"json": {"inputs": [3]}}, 400, "input 0 must be a JSON object"),
    (
        "unknown datatype",
        "affine",
        infer_json(x_input([1, 4], datatype="FLOAT")),
        400,
        "input 'x': unknown datatype \"FLOAT\" (one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, "
        "INT64, FP16, FP32, FP64, BYTES)",
    ),
    (
        "shape not integers",
        "affine",
        infer_json({"name": "x", "shape": [1, "4"], "datatype": "FP32", "data": [0, 0, 0, 0]}),
        400,
        "input 'x': 'shape' must be a list of integers",
    ),
    (
        "negative dimension",
        "affine",
        infer_json({"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}),
        400,
        "input 'x': shape [-1, 4] has a negative dimension",
    ),
    (
        "no data",
        "affine",
        infer_json({"name": "x", "shape": [1, 4], "datatype": "FP32"}),
        400,
        "input 'x' has no 'data' and no parameters.binary_data_size",
    ),
    (
        "element count off",
        "affine",
        infer_json(x_input([2, 4], data=[1, 2, 3, 4, 5, 6, 7])),
        400,
        "input 'x': data has 7 elements but shape [2, 4] needs 8",
    ),
    (
        "ragged data",
        "affine",
        infer_json(x_input([2, 4], data=[[1, 2, 3, 4], [5, 6, 7]])),
        400,
        "input 'x': data is not a rectangular array of FP32 values",
    ),
    (
        "text in FP32 data",
        "affine",
        infer_json(x_input([1, 4], data=[1, 2, "three", 4])),
        400,
        """input 'x': data of datatype FP32 must be numbers (or "NaN", "Infinity", "-Infinity"), not 'three'""",
    ),
    (
        "UINT8 out of range",
        "affine",
        infer_json(x_input([1, 4], datatype="UINT8", data=[1, 2, 300, 4])),
        400,
        "input 'x': data out of range for UINT8 (0..255)",
    ),
    (
        "wrong datatype",
        "affine",
        infer_json(x_input([2, 4], datatype="INT64")),
        400,
        "input 'x' of model 'affine' expects datatype FP32 and shape [-1, 4]; got datatype INT64 and shape [2, 4]",
    ),
    (
        "wrong inner dimension",
        "affine",
        infer_json(x_input([2, 3])),
        400,
        "input 'x' of model 'affine' expects datatype FP32 and shape [-1, 4]; got datatype FP32 and shape [2, 3]",
    ),
    (
        "wrong rank",
        "affine",
        infer_json(x_input([8])),
        400,
        "input 'x' of model 'affine' expects datatype FP32 and shape [-1, 4]; got datatype FP32 and shape [8]",
    ),
    (
        "fixed shape mismatch",
        "fixed",
        infer_json(x_input([2, 3], name="input")),
        400,
        "input 'input' of model 'fixed' expects datatype FP32 and shape [2, 2]; got datatype FP32 and shape [2, 3]",
    ),
    (
        "unknown input",
        "affine",
        infer_json(x_input([1, 4]), x_input([1, 4], name="z")),
        400,
        "model 'affine' has no input 'z'; its inputs are 'x'",
    ),
    (
        "duplicate input",
        "affine",
        infer_json(x_input([1, 4]), x_input([1, 4])),
        400,
        "input 'x' is given more than once",
    ),
    (
        "missing input",
        "pair",
        infer_json(x_input([1, 3], datatype="INT64")),
        400,
        "model 'pair' needs input 'y' with datatype INT64 and shape [-1, 3]",
    ),
    (
        "batch dimension disagrees between inputs",
        "pair",
        infer_json(x_input([2, 3], datatype="INT64"), x_input([3, 3], datatype="INT64", name="y")),
        400,
        "input 'y' of model 'pair': dimension 'n' is 3 here but 2 in another input",
    ),
    (
        "unknown output",
        "affine",
        infer_json(x_input([1, 4]), outputs=[{"name": "nope"}]),
        400,
        "model 'affine' has no output 'nope'; its outputs are 'y'",
    ),
    (
        "binary_data not a boolean",
        "affine",
        infer_json(x_input([1, 4]), outputs=[{"name": "y", "parameters": {"binary_data": "yes"}}]),
        400,
        "parameters.binary_data of output 'y' must be true or false",
    ),
    (
        "header length not a number",
        "affine",
        with_header(BINARY_X, "ten"),
        400,
        "Inference-Header-Content-Length must be an integer, got 'ten'",
    ),
    (
        "header length past the body",
        "affine",
        with_header(BINARY_X, str(len(BINARY_X) + 1)),
        400,
        f"Inference-Header-Content-Length is {len(BINARY_X) + 1} but the body has {len(BINARY_X)} bytes; "
        "it must be between 1 and the body length",
    ),
    (
        "binary size does not fit the shape",
        "affine",
        binary_with(
            {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}, bytes(12)
        ),
        400,
        "input 'x': binary_data_size is 12 bytes but shape [2, 4] of FP32 needs 32 bytes",
    ),
    (
        "binary size past the body",
        "affine",
        binary_with(
            {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}, bytes(20)
        ),
        400,
        "input 'x': binary_data_size 32 runs past the end of the body (20 bytes of binary data left)",
    ),
    (
        "bytes after the last input",
        "affine",
        with_header(BINARY_X + b"tail", str(BINARY_JSON_LENGTH)),
        400,
        "the body has 4 bytes of binary data after the last input's binary_data_size (inputs use 32 of 36 bytes)",
    ),
    (
        "data and binary_data_size both",
        "affine",
        binary_with(
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP32",
                "data": [1, 2, 3, 4],
                "parameters": {"binary_data_size": 16},
            },
            bytes(16),
        ),
        400,
        "input 'x' has both 'data' and parameters.binary_data_size",
    ),
    (
        "BOOL bytes other than 0 and 1",
        "flags",
        binary_with(
            {"name": "input", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}, bytes([1, 7])
        ),
        400,
        "input 'input': BOOL binary data must be bytes 0 or 1",
    ),
    (
        "unknown model",
        "nope",
        infer_json(x_input([1, 4])),
        404,
        "model 'nope' not found in the model repository",
    ),
    (
        "body over the limit",
        "affine",
        {"content": b"{" + b" " * LIMIT + b"}"},
        413,
        f"request body of {LIMIT + 2} bytes exceeds the limit of {LIMIT} bytes",
    ),
    # Hostile input that got plain-text 500s (issue 12, item 5).
    (
        "header length a superscript digit",
        "affine",
        {"content": BINARY_X, "headers": {"Inference-Header-Content-Length": "²".encode()}},
        400,
        "Inference-Header-Content-Length must be an integer, got 'Â²'",  # header bytes read as Latin-1
    ),
    (
        "a 5,000-digit dimension",
        "affine",
        {"content": b'{"inputs": [{"name": "x", "shape": [' + b"9" * 5000 + b', 4], "datatype": "FP32", "data": []}]}'},
        400,
        "malformed JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits; "
        "use sys.set_int_max_str_digits() to increase the limit",
    ),
    (
        "data nested 3,000 deep",
        "affine",
        {
            "content": b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": '
            + b"[" * 3000
            + b"]" * 3000
            + b"}]}"
        },
        400,
        "input 'x': data is not a rectangular array of FP32 values",
    ),
]


@pytest.mark.parametrize(
    ("model", "request_kwargs", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_gets_exact_status_and_message(
    standard_server: RunningServer, model: str, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    response = standard_server.client.post(f"/v2/models/{model}/infer", **request_kwargs)
    assert response.status_code == status
    assert response.json() == {"error": message}
    # ... and the server keeps serving.
    good = standard_server.client.post("/v2/models/affine/infer", json={"inputs": [x_input([1, 4])]})
    assert good.status_code == 200


def chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def test_streamed_body_over_the_limit_gets_413(standard_server: RunningServer) -> None:
    # A chunked upload has no Content-Length: the limit is enforced while reading.
    response = standard_server.client.post("/v2/models/affine/infer", content=chunks(LIMIT + 1024))
    assert response.status_code == 413
    assert response.json() == {"error": f"request body exceeds the limit of {LIMIT} bytes"}


def test_metadata_and_ready_of_unknown_model_are_404(standard_server: RunningServer) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/versions/1"):
        response = standard_server.client.get(path)
        assert response.status_code == 404
        assert response.json() == {"error": "model 'nope' not found in the model repository"}


def test_unknown_version_is_404(standard_server: RunningServer) -> None:
    response = standard_server.client.post("/v2/models/affine/versions/3/infer", json={"inputs": [x_input([1, 4])]})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'affine' version '3' not found in the model repository"}


def test_repository_calls_reject_bad_names_and_bodies(standard_server: RunningServer) -> None:
    climbing = standard_server.client.post("/v2/repository/models/%2E%2E/load")
    assert climbing.status_code == 404
    assert climbing.json() == {"error": "model '..' not found in the model repository"}
    missing = standard_server.client.post("/v2/repository/models/nope/unload")
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found in the model repository"})
    index = standard_server.client.post("/v2/repository/index", content=b"{ready")
    assert index.status_code == 400
    assert index.json()["error"].startswith("malformed JSON: ")
    typed = standard_server.client.post("/v2/repository/index", json={"ready": "yes"})
    assert typed.status_code == 400
    assert typed.json() == {"error": "the index request must be a JSON object with an optional boolean 'ready'"}


def test_unknown_route_and_method_use_the_error_body(standard_server: RunningServer) -> None:
    route = standard_server.client.get("/v2/nothing/here")
    method = standard_server.client.get("/v2/models/affine/infer")
    assert (route.status_code, route.json()) == (404, {"error": "Not Found"})
    assert (method.status_code, method.json()) == (405, {"error": "Method Not Allowed"})
