"""The images install the Python side CI tests: same interpreter minor, same pinned packages,
every source folder copied, a non-root numeric user (nothing here can run Docker to build them)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"operator": REPO / "images" / "operator.Dockerfile", "serve": REPO / "images" / "inference.Dockerfile"}


def pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def test_ci_runs_the_pinned_versions_the_images_install() -> None:
    mismatched = {
        name: (version, importlib.metadata.version(name))
        for name, version in pins().items()
        if importlib.metadata.version(name) != version
    }
    assert not mismatched, f"installed != constraints.txt (run `make install` or `make constraints`): {mismatched}"


@pytest.mark.parametrize("extra", ["operator", "serve"])
def test_every_runtime_requirement_is_pinned(extra: str) -> None:
    requirements = [Requirement(text) for text in importlib.metadata.requires("edgeaigc") or []]
    needed = {
        canonicalize_name(r.name)
        for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": extra})
        if r.name != "edgeaigc"
    }
    assert needed - set(pins()) == set()


@pytest.mark.parametrize(("extra", "dockerfile"), DOCKERFILES.items())
def test_dockerfile_matches_what_ci_tests(extra: str, dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.\d+-slim", text, re.MULTILINE)
    assert base is not None, "the base image must be a pinned python:X.Y.Z-slim tag"
    assert (int(base[1]), int(base[2])) == sys.version_info[:2]
    assert f'--constraint constraints.txt ".[{extra}]"' in text
    user = re.search(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert user is not None and int(user[1]) != 0, "a numeric non-root user (runAsNonRoot can verify it)"
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in package_dirs.values():
        assert re.search(rf"^COPY {folder} {folder}$", text, re.MULTILINE), f"{folder}/ is not copied"
    assert "torch" not in re.sub(r"#.*", "", text)
