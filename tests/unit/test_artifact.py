"""Model delivery without a network: copying, checksums, the budget, and the contract with the server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from edgeaigc.inference.delivery import artifact, exit_codes
from edgeaigc.inference.delivery.artifact import ChecksumMismatch, OverBudget, SourceUnreachable, copy_file
from edgeaigc.inference.delivery.exit_codes import ExitCode
from edgeaigc.inference.server.repository import CONFIG_FILE, MODEL_FILE, read_model_config

DATA = b"onnx" * 50_000
DATA_SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "volume" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def test_the_layout_is_the_model_repositorys() -> None:
    # artifact.py does not import the repository (onnxruntime, FastAPI); the names must still agree.
    assert (artifact.MODEL_FILE, artifact.CONFIG_FILE) == (MODEL_FILE, CONFIG_FILE)


def test_each_failure_has_its_exit_code_and_condition_reason() -> None:
    assert [ChecksumMismatch.exit_code, SourceUnreachable.exit_code, OverBudget.exit_code] == [3, 4, 5]
    assert {exit_codes.REASONS[code] for code in (3, 4, 5)} == {"ChecksumMismatch", "SourceUnreachable", "OverBudget"}
    assert set(exit_codes.REASONS) == set(ExitCode) - {ExitCode.OK}


def test_a_copy_records_its_checksum_where_the_server_reads_it(source: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    result = copy_file(
        source, tmp_path / "m", sha256=DATA_SHA, max_bytes=len(DATA), progress=lambda d, t: seen.append((d, t))
    )
    assert (result.sha256, result.size, result.kept) == (DATA_SHA, len(DATA), False)
    assert read_model_config(tmp_path / "m").sha256 == DATA_SHA
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) == -(-len(DATA) // artifact.CHUNK_BYTES)


def test_other_settings_of_an_existing_config_are_kept(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / CONFIG_FILE).write_text("intra_op_threads: 2\nsha256: " + "a" * 64 + "\n")
    copy_file(source, dest, sha256=None, max_bytes=len(DATA))
    assert yaml.safe_load((dest / CONFIG_FILE).read_text()) == {"intra_op_threads": 2, "sha256": DATA_SHA}


def test_a_kept_file_is_not_read_from_the_source(source: Path, tmp_path: Path) -> None:
    copy_file(source, tmp_path / "m", sha256=DATA_SHA, max_bytes=len(DATA))
    source.unlink()  # the source is gone: only keeping the file can succeed
    assert copy_file(source, tmp_path / "m", sha256=DATA_SHA, max_bytes=len(DATA)).kept
    # Without a checksum there is no telling the file is current: the source is needed.
    with pytest.raises(SourceUnreachable):
        copy_file(source, tmp_path / "m", sha256=None, max_bytes=len(DATA))


def test_a_wrong_file_in_place_is_removed_before_fetching(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / MODEL_FILE).write_bytes(b"old model")
    with pytest.raises(ChecksumMismatch):
        copy_file(source, dest, sha256="b" * 64, max_bytes=len(DATA))
    # Neither the old file (it does not match either) nor the new one stays: the server loads nothing.
    assert list(dest.iterdir()) == []


def test_a_file_over_the_budget_is_refused_before_reading(source: Path, tmp_path: Path) -> None:
    reads: list[int] = []
    with pytest.raises(OverBudget, match=r"more than the budget of 0\.2 MiB"):
        copy_file(source, tmp_path / "m", sha256=None, max_bytes=len(DATA) - 1, progress=lambda d, t: reads.append(d))
    assert reads == [] and list((tmp_path / "m").iterdir()) == []


def test_a_destination_that_cannot_be_created_is_a_plain_failure(source: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(artifact.ArtifactError) as failure:
        copy_file(source, tmp_path / "file" / "m", sha256=None, max_bytes=len(DATA))
    assert failure.value.exit_code == ExitCode.FAILED and "cannot create" in str(failure.value)
