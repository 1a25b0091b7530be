"""The folders, the package they install as, and the links that let static tools read that package."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_edgeaigc_links_each_mapped_folder_and_nothing_else() -> None:
    mapped = {name.removeprefix("edgeaigc."): folder for name, folder in SETUPTOOLS["package-dir"].items()}
    links = {path.name: path for path in (REPO / "edgeaigc").iterdir()}
    assert set(links) == set(mapped)
    for name, path in links.items():
        assert path.is_symlink() and path.resolve() == (REPO / mapped[name]).resolve(), name


def test_every_sub_package_is_installed() -> None:
    """A sub-package missing from ``packages`` works in a checkout and is absent from the images."""
    found = set(SETUPTOOLS["package-dir"]) | {
        ".".join([name, *init.parent.relative_to(REPO / folder).parts])
        for name, folder in SETUPTOOLS["package-dir"].items()
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert found == set(SETUPTOOLS["packages"])
