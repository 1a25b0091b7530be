"""A Dockerfile build retried once on the runtime's transient memfd error, and only on that."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from edgeaigc.cluster import images


def _builds(monkeypatch: pytest.MonkeyPatch, failures: Sequence[str]) -> list[str]:
    """Run build_dockerfile_image with ``_stream`` failing with each of ``failures`` in turn; the calls made."""
    calls: list[str] = []
    left = list(failures)

    def stream(command: Sequence[str | Path], what: str, progress: images.Progress, **_: object) -> None:
        calls.append(what)
        if left:
            raise images.ImageBuildError(f"{what} failed (exit 1); last lines:\n{left.pop(0)}")

    monkeypatch.setattr(images, "_stream", stream)
    monkeypatch.setattr(images, "_require", lambda tool, package: tool)
    monkeypatch.setattr(images, "ensure_binfmt", lambda arch: None)
    images.build_dockerfile_image("inference", images.host_arch(), "key", lambda message: None)
    return calls


def test_the_transient_memfd_error_is_built_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    transient = f'Close_Fd {images.TRANSIENT_BUILD_ERROR}\nError: building at STEP "RUN python -m pip install"'
    assert len(_builds(monkeypatch, [transient])) == 2


def test_a_real_build_failure_and_a_second_transient_one_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(images.ImageBuildError, match="No matching distribution"):
        _builds(monkeypatch, ["ERROR: No matching distribution found for onnxruntime"])
    with pytest.raises(images.ImageBuildError, match="memfd"):
        _builds(monkeypatch, [images.TRANSIENT_BUILD_ERROR, images.TRANSIENT_BUILD_ERROR])
