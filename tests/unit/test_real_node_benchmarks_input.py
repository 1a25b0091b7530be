"""The real-node benchmarks refuse bad input with exit 2 before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeaigc.cli.main import main


@pytest.mark.parametrize(
    "arguments",
    [
        ["bench-quota", "--limits", "5,100"],
        ["bench-quota", "--limits", "100,2000"],
        ["bench-quota", "--limits", "x"],
        ["bench-quota", "--model", "no-equals-sign"],
        ["bench-quota", "--model", "m=/nonexistent.onnx"],
        ["bench-quota", "--requests", "0"],
        ["bench-quota", "--demo-models", "/nonexistent-demo-models"],
        ["bench-resize", "--model", "no-equals-sign"],
        ["bench-resize", "--model", "m=/nonexistent.onnx"],
        ["bench-resize", "--from", "300", "--to", "300"],
        ["bench-resize", "--to", "2000"],
        ["bench-resize", "--rate", "0"],
        ["bench-resize", "--phase-seconds", "1"],
        ["bench-chaos", "--faults", "operator,meteor"],
        ["bench-chaos", "--duration", "0"],
        ["bench-chaos", "--model", "/nonexistent.onnx"],
    ],
)
def test_bad_input_exits_2(arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*arguments, "--output", str(tmp_path / "out")]) == 2
    assert f"edgeaigc {arguments[0]}:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started or written
