"""The CRDs' defaults exist once: policy/crd_defaults.py states what crds/*.yaml default, and applies it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.policy.crd_defaults import SPEC_DEFAULTS, with_defaults

CRDS = Path(__file__).resolve().parents[2] / "crds"


def _defaults(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, default) of every defaulted field below ``schema``, parents first."""
    for name, field in (schema.get("properties") or {}).items():
        if "default" in field:
            yield prefix + name, field["default"]
        yield from _defaults(field, f"{prefix}{name}.")


def _crd_spec_defaults() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = crd["spec"]["versions"]
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        found[crd["spec"]["names"]["kind"]] = dict(_defaults(spec))
    return found


def test_the_table_is_what_the_crds_default() -> None:
    assert _crd_spec_defaults() == SPEC_DEFAULTS
    for table in SPEC_DEFAULTS.values():
        paths = list(table)
        for index, path in enumerate(paths):
            parent = path.rpartition(".")[0]
            assert not parent or parent not in table or paths.index(parent) < index, f"{path} before its parent"


def test_absent_fields_take_their_defaults_as_on_the_api_server() -> None:
    spec = {"mode": "dry-run", "reward": {"alpha": 0.0}}
    filled = with_defaults("PlacementPolicy", spec)
    assert filled["mode"] == "dry-run" and filled["churnLimit"] == 2 and filled["intervalSeconds"] == 30
    assert filled["reward"] == {"alpha": 0.0, "beta": 1.0, "tRefSeconds": 0.1, "cRefPerRequest": 5e-6}
    assert filled["cloud"]["coreSpeed"] == 1.5  # an object that defaults to {} gets its fields' defaults
    assert "actor" not in filled  # an optional object is not made up, but completed when given
    assert with_defaults("PlacementPolicy", {"actor": {"configMapName": "a"}})["actor"]["key"] == "actor.onnx"
    assert spec == {"mode": "dry-run", "reward": {"alpha": 0.0}}  # the caller's spec is left alone
