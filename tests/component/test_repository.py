"""Model repository on real servers: load, unload, index, LRU eviction under a budget, load failures."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from edgeaigc.inference.errors import ModelNotReady
from edgeaigc.inference.protocol import InferInput
from edgeaigc.inference.server.repository import MEMORY_FACTOR, ModelRepository, parse_byte_size
from tests.component.builders import affine_model, identity_model, sha256_of, write_config
from tests.component.conftest import RunningServer, running_server, sample_value

MiB = 2**20
X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def index_of(server: RunningServer, **body: Any) -> dict[str, tuple[str, str]]:
    response = server.client.post("/v2/repository/index", json=body or None)
    assert response.status_code == 200
    return {entry["name"]: (entry["state"], entry["reason"]) for entry in response.json()}


def sized_models(root: Path, names: list[str], memory: str = "10Mi") -> Path:
    """Affine models that count ``memory`` each against the budget."""
    for name in names:
        affine_model(root / name / "model.onnx")
        write_config(root / name, memory=memory)
    return root


def test_load_unload_and_index(tmp_path: Path) -> None:
    affine_model(tmp_path / "affine" / "model.onnx")
    identity_model(tmp_path / "flags" / "model.onnx", TensorProto.BOOL, ["n"])
    with running_server(tmp_path, preload=False) as server:
        assert index_of(server) == {
            "affine": ("UNAVAILABLE", "not loaded"),
            "flags": ("UNAVAILABLE", "not loaded"),
        }
        before = server.client.post("/v2/models/affine/infer", json=X)
        assert before.status_code == 503
        assert before.json() == {"error": "model 'affine' is not ready: state UNAVAILABLE: not loaded"}
        not_ready = server.client.get("/v2/models/affine/ready")
        assert (not_ready.status_code, not_ready.json()) == (503, before.json())

        loaded = server.client.post("/v2/repository/models/affine/load")
        assert (loaded.status_code, loaded.json()) == (200, {"name": "affine", "load": True})
        assert index_of(server)["affine"] == ("READY", "")
        assert index_of(server, ready=True) == {"affine": ("READY", "")}
        assert server.client.post("/v2/models/affine/infer", json=X).status_code == 200
        again = server.client.post("/v2/repository/models/affine/load")  # unchanged files: a no-op
        assert again.status_code == 200

        unloaded = server.client.post("/v2/repository/models/affine/unload")
        assert (unloaded.status_code, unloaded.json()) == (200, {"name": "affine", "unload": True})
        assert index_of(server)["affine"] == ("UNAVAILABLE", "unloaded")
        after = server.client.post("/v2/models/affine/infer", json=X)
        assert (after.status_code, after.json()) == (
            503,
            {"error": "model 'affine' is not ready: state UNAVAILABLE: unloaded"},
        )
        # A model directory added while the server runs is found by the index and can be loaded.
        affine_model(tmp_path / "late" / "model.onnx")
        assert index_of(server)["late"] == ("UNAVAILABLE", "not loaded")
        assert server.client.post("/v2/repository/models/late/load").status_code == 200
        assert server.client.post("/v2/models/late/infer", json=X).status_code == 200


def test_server_is_live_but_not_ready_until_startup_loading_ends(tmp_path: Path) -> None:
    affine_model(tmp_path / "affine" / "model.onnx")
    repository = ModelRepository(tmp_path, workers=1)
    release = threading.Event()
    original_start = repository.start

    async def held_start(preload: bool = True) -> None:
        await asyncio.to_thread(release.wait, 20)
        await original_start(preload)

    repository.start = held_start
    with running_server(tmp_path, repository=repository, wait_for="/v2/health/live") as server:
        not_ready = server.client.get("/v2/health/ready")
        assert (not_ready.status_code, not_ready.json()) == (503, {"error": "the server is still loading its models"})
        release.set()
        deadline = time.monotonic() + 20
        while server.client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.02)
        assert server.client.get("/v2/models/affine/ready").json() == {"name": "affine", "ready": True}


def test_lru_idle_model_is_evicted_past_the_budget(tmp_path: Path) -> None:
    sized_models(tmp_path, ["a", "b", "c"])
    with running_server(tmp_path, memory_budget_bytes=25 * MiB, preload=False) as server:
        for name in ("a", "b"):
            assert server.client.post(f"/v2/repository/models/{name}/load").status_code == 200
        assert server.client.post("/v2/models/a/infer", json=X).status_code == 200  # b is now least recently used
        assert server.client.post("/v2/repository/models/c/load").status_code == 200
        assert index_of(server) == {
            "a": ("READY", ""),
            "b": ("UNAVAILABLE", "evicted (least recently used) to make room for 'c'"),
            "c": ("READY", ""),
        }
        evicted = server.client.post("/v2/models/b/infer", json=X)
        assert evicted.json() == {
            "error": "model 'b' is not ready: state UNAVAILABLE: evicted (least recently used) to make room for 'c'"
        }
        assert server.client.post("/v2/models/a/infer", json=X).status_code == 200
        assert server.repository.memory_used() == 20 * MiB
        metrics = server.metrics_text()
        assert sample_value(metrics, "edgeaigc_model_evictions_total", model="b") == 1
        assert sample_value(metrics, "edgeaigc_model_evictions_total", model="a") == 0
        assert sample_value(metrics, "edgeaigc_models_loaded") == 2
        assert sample_value(metrics, "edgeaigc_model_ready", model="b") == 0
        assert sample_value(metrics, "edgeaigc_memory_budget_bytes") == 25 * MiB


def test_startup_loads_what_fits_and_evicts_nothing(tmp_path: Path) -> None:
    sized_models(tmp_path, ["a", "b", "c"])
    with running_server(tmp_path, memory_budget_bytes=25 * MiB) as server:
        assert index_of(server) == {
            "a": ("READY", ""),
            "b": ("READY", ""),
            "c": (
                "UNAVAILABLE",
                "does not fit the memory budget: needs 10.0 MiB, 5.0 MiB of 25.0 MiB free and models loaded at "
                "start-up evict nothing",
            ),
        }


def test_model_larger_than_the_budget_is_refused(tmp_path: Path) -> None:
    sized_models(tmp_path, ["small"])
    sized_models(tmp_path, ["huge"], memory="1Gi")
    with running_server(tmp_path, memory_budget_bytes=25 * MiB, preload=False) as server:
        assert server.client.post("/v2/repository/models/small/load").status_code == 200
        response = server.client.post("/v2/repository/models/huge/load")
        assert response.status_code == 503
        assert response.json() == {
            "error": "model 'huge' is not ready: state UNAVAILABLE: needs 1024.0 MiB, more than the whole memory "
            "budget of 25.0 MiB"
        }
        assert index_of(server)["small"] == ("READY", "")  # nothing was evicted for a hopeless load


def test_memory_estimate_is_file_size_times_factor(tmp_path: Path) -> None:
    path = affine_model(tmp_path / "affine" / "model.onnx")
    with running_server(tmp_path) as server:
        expected = int(path.stat().st_size * MEMORY_FACTOR)
        assert server.repository.memory_used() == expected
        assert server.sample("edgeaigc_model_memory_bytes", model="affine") == expected


def failing_repository(root: Path) -> Path:
    affine_model(root / "good" / "model.onnx")
    tampered = affine_model(root / "tampered" / "model.onnx")
    write_config(root / "tampered", sha256="0" * 64)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "model.onnx").write_bytes(b"\x08\x07 this is not an ONNX protobuf \xff\xfe")
    (root / "empty").mkdir()
    affine_model(root / "badconfig" / "model.onnx")
    write_config(root / "badconfig", intra_op_threads=0, colour="red")
    assert sha256_of(tampered) != "0" * 64
    return root


def test_load_failures_are_reported_on_the_model_and_others_keep_serving(tmp_path: Path) -> None:
    root = failing_repository(tmp_path)
    digest = sha256_of(root / "tampered" / "model.onnx")
    with running_server(root) as server:  # ready although four of five models failed
        index = index_of(server)
        assert index["good"] == ("READY", "")
        assert index["tampered"] == (
            "UNAVAILABLE",
            f"checksum mismatch: config.yaml expects sha256 {'0' * 64}, file has {digest}",
        )
        assert index["empty"] == ("UNAVAILABLE", "model file not found: empty/model.onnx")
        assert index["badconfig"] == (
            "UNAVAILABLE",
            "invalid config.yaml: unknown keys ['colour'] (known: ['dynamic_batching', 'intra_op_threads', "
            "'max_batch_size', 'memory', 'sha256'])",
        )
        state, reason = index["corrupt"]
        assert state == "UNAVAILABLE" and reason.startswith("cannot load ONNX model: ") and len(reason) > 24

        response = server.client.post("/v2/models/tampered/infer", json=X)
        assert response.status_code == 503
        assert response.json() == {"error": f"model 'tampered' is not ready: state UNAVAILABLE: {index['tampered'][1]}"}
        reload = server.client.post("/v2/repository/models/corrupt/load")
        assert reload.status_code == 503
        assert reload.json() == {"error": f"model 'corrupt' is not ready: state UNAVAILABLE: {reason}"}
        assert server.client.post("/v2/models/good/infer", json=X).status_code == 200
        metrics = server.metrics_text()
        assert sample_value(metrics, "edgeaigc_model_loads_total", model="tampered", outcome="failure") == 1
        assert sample_value(metrics, "edgeaigc_model_loads_total", model="corrupt", outcome="failure") == 2
        assert sample_value(metrics, "edgeaigc_model_loads_total", model="good", outcome="success") == 1

        # Fixing the checksum and loading again recovers the model without a restart.
        write_config(root / "tampered", sha256=digest)
        fixed = server.client.post("/v2/repository/models/tampered/load")
        assert (fixed.status_code, fixed.json()) == (200, {"name": "tampered", "load": True})
        assert server.client.post("/v2/models/tampered/infer", json=X).status_code == 200


def test_correct_checksum_loads(tmp_path: Path) -> None:
    path = affine_model(tmp_path / "pinned" / "model.onnx")
    write_config(tmp_path / "pinned", sha256=sha256_of(path).upper(), intra_op_threads=2)
    with running_server(tmp_path) as server:
        assert index_of(server) == {"pinned": ("READY", "")}


# -- the repository without HTTP: states a server cannot be held in from outside -------------------


def feed_one(repository: ModelRepository, name: str) -> list[InferInput]:
    return [InferInput("x", "FP32", (1, 4), np.ones((1, 4), dtype=np.float32))]


def test_busy_models_are_never_evicted(tmp_path: Path) -> None:
    sized_models(tmp_path, ["a", "b", "c"])

    async def scenario() -> None:
        repository = ModelRepository(tmp_path, memory_budget_bytes=25 * MiB, workers=1)
        try:
            await repository.load("a")
            with repository.acquire("a"):  # a is busy, and the least recently used once b loads
                await repository.load("b")
                await repository.load("c")  # must evict b (idle), not a (busy)
                assert [(r.name, r.state.value) for r in repository.records()] == [
                    ("a", "READY"),
                    ("b", "UNAVAILABLE"),
                    ("c", "READY"),
                ]
                with repository.acquire("c"):  # now every loaded model is busy
                    with pytest.raises(ModelNotReady) as refused:
                        await repository.load("b")
                    assert refused.value.message == (
                        "model 'b' is not ready: state UNAVAILABLE: does not fit the memory budget: needs 10.0 MiB, "
                        "5.0 MiB of 25.0 MiB free and every loaded model is busy"
                    )
        finally:
            repository.close()

    asyncio.run(scenario())


def test_unload_waits_for_running_requests(tmp_path: Path) -> None:
    affine_model(tmp_path / "a" / "model.onnx")

    async def scenario() -> None:
        repository = ModelRepository(tmp_path, workers=1)
        try:
            await repository.load("a")
            with repository.acquire("a") as model:
                await repository.unload("a")
                assert not model.ready
                outputs = await model.infer(model.validate(feed_one(repository, "a")), ["y"])  # still runs
                assert outputs["y"].shape == (1, 3)
            assert model._session is None  # released once the last request let go
        finally:
            repository.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "size"),
    [("512Mi", 512 * MiB), ("2Gi", 2 * 2**30), ("100M", 100_000_000), ("1048576", MiB), ("1.5Ki", 1536), (7, 7)],
)
def test_parse_byte_size(text: str | int, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "12XB", "Mi", "1.2.3"])
def test_parse_byte_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_byte_size(text)


def test_a_failed_reload_keeps_the_working_model_serving(tmp_path: Path) -> None:
    model_file = affine_model(tmp_path / "affine" / "model.onnx")
    with running_server(tmp_path) as server:
        expected = server.client.post("/v2/models/affine/infer", json=X).json()
        model_file.write_bytes(b"half a download")  # the files change and are corrupt
        reload = server.client.post("/v2/repository/models/affine/load")
        assert reload.status_code == 400
        message = reload.json()["error"]
        assert message.startswith("model 'affine' was not reloaded, it still serves its previous files: cannot load")
        state, reason = index_of(server)["affine"]
        assert state == "READY" and reason.startswith("reload failed, still serving the previous files: ")
        still = server.client.post("/v2/models/affine/infer", json=X)
        assert (still.status_code, still.json()) == (200, expected)
        assert sample_value(server.metrics_text(), "edgeaigc_model_loads_total", model="affine", outcome="failure") == 1

        affine_model(model_file)  # good files again: the reload replaces the session
        assert server.client.post("/v2/repository/models/affine/load").status_code == 200
        assert index_of(server)["affine"] == ("READY", "")
        assert server.client.post("/v2/models/affine/infer", json=X).json() == expected


def test_links_to_outside_the_repository_are_refused(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "repository"
    affine_model(outside / "model" / "model.onnx")
    (outside / "secret.yaml").write_text("password: hunter2\n")
    (root / "linked").mkdir(parents=True)
    (root / "linked").rmdir()
    (root / "linked").symlink_to(outside / "model")  # the whole model directory
    affine_model(root / "config-link" / "model.onnx")
    (root / "config-link" / "config.yaml").symlink_to(outside / "secret.yaml")
    (root / "model-link").mkdir()
    (root / "model-link" / "model.onnx").symlink_to(outside / "model" / "model.onnx")
    affine_model(root / "affine" / "model.onnx")
    (root / "inner-link").mkdir()
    (root / "inner-link" / "model.onnx").symlink_to(root / "affine" / "model.onnx")  # inside: fine
    with running_server(root) as server:
        index = index_of(server)
        assert "linked" not in index
        assert server.client.post("/v2/repository/models/linked/load").status_code == 404
        assert index["config-link"] == ("UNAVAILABLE", "config-link/config.yaml is a link to outside the repository")
        assert index["model-link"] == ("UNAVAILABLE", "model-link/model.onnx is a link to outside the repository")
        assert index["inner-link"] == ("READY", "")
        assert "hunter2" not in server.client.post("/v2/repository/index").text
