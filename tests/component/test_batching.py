"""Dynamic batching: concurrent requests share one onnxruntime run and each gets its own rows back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeaigc.inference.server.model import DynamicBatcher
from tests.component.builders import affine_model, identity_model, reference_run, write_config
from tests.component.conftest import running_server


def test_batcher_fills_batches_then_flushes_the_rest_after_the_delay() -> None:
    runs: list[list[int]] = []

    async def run(feed: dict[str, np.ndarray], names: list[str], requests: int) -> dict[str, np.ndarray]:
        runs.append(feed["x"][:, 0].astype(int).tolist())
        return {"y": feed["x"] * 10}

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = DynamicBatcher(run, max_batch_size=4, max_delay_s=0.05)
        feeds = [{"x": np.full((rows, 2), index, dtype=np.float32)} for index, rows in enumerate([1, 2, 1, 1, 1])]
        return await asyncio.gather(*(batcher.submit(feed, ["y"]) for feed in feeds))

    results = asyncio.run(scenario())
    # 1 + 2 + 1 rows make a full batch at once; the last two wait out the delay together.
    assert runs == [[0, 1, 1, 2], [3, 4]]
    for index, (rows, result) in enumerate(zip([1, 2, 1, 1, 1], results, strict=True)):
        np.testing.assert_array_equal(result["y"], np.full((rows, 2), index * 10, dtype=np.float32))


def test_batcher_keeps_different_shapes_apart() -> None:
    runs: list[tuple[int, ...]] = []

    async def run(feed: dict[str, np.ndarray], names: list[str], requests: int) -> dict[str, np.ndarray]:
        runs.append(feed["x"].shape)
        return {"y": feed["x"].sum(axis=1, keepdims=True)}

    async def scenario() -> None:
        batcher = DynamicBatcher(run, max_batch_size=8, max_delay_s=0.02)
        await asyncio.gather(
            batcher.submit({"x": np.ones((1, 2))}, ["y"]),
            batcher.submit({"x": np.ones((1, 3))}, ["y"]),
            batcher.submit({"x": np.ones((2, 2))}, ["y"]),
        )

    asyncio.run(scenario())
    assert sorted(runs) == [(1, 3), (3, 2)]


def test_batcher_passes_errors_to_every_request_of_the_batch() -> None:
    async def run(feed: dict[str, np.ndarray], names: list[str], requests: int) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(run, max_batch_size=2, max_delay_s=0.01)
        return await asyncio.gather(
            batcher.submit({"x": np.ones((1, 2))}, ["y"]),
            batcher.submit({"x": np.ones((1, 2))}, ["y"]),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    assert [str(result) for result in results] == ["boom", "boom"]


def batched_repository(root: Path) -> Path:
    affine_model(root / "batched" / "model.onnx")
    write_config(root / "batched", max_batch_size=4, dynamic_batching={"max_delay_ms": 500})
    identity_model(root / "fixed" / "model.onnx", 1, [2, 2])  # FLOAT, no batch dimension
    write_config(root / "fixed", max_batch_size=4, dynamic_batching=True)
    return root


def test_concurrent_requests_share_one_run_on_a_real_server(tmp_path: Path) -> None:
    root = batched_repository(tmp_path)
    rows = [1, 2, 1]  # 4 rows: the third request completes a batch at once
    inputs = [np.random.default_rng(index).normal(size=(n, 4)).astype(np.float32) for index, n in enumerate(rows)]
    with running_server(root) as server:
        assert server.repository.get("batched").batching
        assert not server.repository.get("fixed").batching  # no dynamic first dim: batching is ignored

        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v2/models/batched/infer",
                            json={
                                "inputs": [
                                    {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
                                ]
                            },
                        )
                        for x in inputs
                    )
                )

        responses = asyncio.run(send_all())
        runs = server.sample("edgeaigc_inference_batch_requests_count", model="batched")
        served = server.sample("edgeaigc_inference_batch_requests_sum", model="batched")
        fixed = server.client.post(
            "/v2/models/fixed/infer",
            json={"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        )
    assert [response.status_code for response in responses] == [200, 200, 200]
    for x, response in zip(inputs, responses, strict=True):
        [output] = response.json()["outputs"]
        assert output["shape"] == [x.shape[0], 3]
        expected = reference_run(root / "batched" / "model.onnx", {"x": x})["y"]
        np.testing.assert_allclose(np.array(output["data"], dtype=np.float32).reshape(-1, 3), expected, rtol=1e-6)
    assert served == 3
    assert runs is not None and runs < 3  # at least two requests were served by one run
    assert fixed.status_code == 200


def test_request_larger_than_max_batch_size_is_refused(tmp_path: Path) -> None:
    root = batched_repository(tmp_path)
    with running_server(root) as server:
        response = server.client.post(
            "/v2/models/batched/infer",
            json={"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP32", "data": [0.0] * 20}]},
        )
    assert response.status_code == 400
    assert response.json() == {"error": "batch of 5 exceeds max_batch_size 4 of model 'batched'"}


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"dynamic_batching": True}, "invalid config.yaml: dynamic_batching needs max_batch_size >= 1"),
        (
            {"max_batch_size": 2, "dynamic_batching": {"max_delay_ms": -1}},
            "invalid config.yaml: dynamic_batching.max_delay_ms must be a non-negative number",
        ),
        ({"max_batch_size": "big"}, "invalid config.yaml: max_batch_size must be an integer >= 0"),
    ],
)
def test_bad_batching_settings_are_reported_on_the_model(
    tmp_path: Path, settings: dict[str, object], reason: str
) -> None:
    affine_model(tmp_path / "m" / "model.onnx")
    write_config(tmp_path / "m", **settings)
    with running_server(tmp_path) as server:
        index = server.client.post("/v2/repository/index").json()
    assert index == [{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": reason}]
