"""``edgeaigc operator`` hands kopf its settings and peering as arguments (no environment variables)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import kopf
import pytest

from edgeaigc.operator import cli


def _kopf_run_arguments(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    called: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: called.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    environment = dict(os.environ)
    assert cli.run(parser.parse_args(["--metrics-port", "0", *argv])) == 0
    assert dict(os.environ) == environment
    return called


def test_settings_and_peering_are_arguments_of_kopf_run(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = _kopf_run_arguments(monkeypatch, "-n", "city")
    assert alone["standalone"] is True and alone["peering_name"] is None and alone["namespaces"] == ["city"]
    settings = alone["settings"]
    assert settings.scanning.disabled and settings.persistence.finalizer == "edgeaigc.io/finalizer"
    paired = _kopf_run_arguments(monkeypatch, "-A", "--peering", "edgeaigc")
    assert paired["standalone"] is False and paired["peering_name"] == "edgeaigc" and paired["clusterwide"]
