"""A real pretrained detector (YOLOX-Nano from ../shared/data) served and run once, binary tensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.component.builders import binary_request, reference_run, split_binary_response, write_config
from tests.component.conftest import SHARED_DATA, running_server

YOLOX = SHARED_DATA / "yolox_nano.onnx"
#: From ../shared/data/README.md.
YOLOX_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"

pytestmark = pytest.mark.skipif(
    not YOLOX.is_file(),
    reason=f"{YOLOX} not present (the shared data beside the repository is absent); nothing to serve",
)


def test_yolox_nano_serves_one_416_frame(tmp_path: Path) -> None:
    model_dir = tmp_path / "yolox_nano"
    model_dir.mkdir()
    shutil.copyfile(YOLOX, model_dir / "model.onnx")  # a temporary copy, never one in the project
    write_config(model_dir, sha256=YOLOX_SHA256, memory="64Mi")
    frame = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 416, 416)).astype(np.float32)
    with running_server(tmp_path, max_request_bytes=16 * 2**20) as server:
        metadata = server.client.get("/v2/models/yolox_nano").json()
        assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [1, 3, 416, 416]}]
        body, headers = binary_request({"images": ("FP32", frame)}, {"parameters": {"binary_data_output": True}})
        response = server.client.post("/v2/models/yolox_nano/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    document, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    [output] = document["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output", "FP32", [1, 3549, 85])
    received = np.frombuffer(blobs[0], dtype="<f4").reshape(1, 3549, 85)
    np.testing.assert_allclose(received, reference_run(YOLOX, {"images": frame})["output"], rtol=1e-5, atol=1e-5)
