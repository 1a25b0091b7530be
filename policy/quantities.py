"""Kubernetes quantities (``500m``, ``4``, ``24Mi``, ``3700Ki``) as numbers: one parser for every reader.

It is the Kubernetes client's own :func:`kubernetes.utils.parse_quantity`, so what the API server
accepts is read the same way here.
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity


def quantity(value: Any) -> float:
    """The number a quantity stands for (``"500m"`` -> 0.5, ``"1Ki"`` -> 1024); ValueError if it is none."""
    return float(parse_quantity(str(value)))


def millicores(value: Any) -> int:
    """A CPU quantity in millicores (``"1.5"`` -> 1500)."""
    return round(quantity(value) * 1000)


def mebibytes(value: Any) -> float:
    """A byte quantity in MiB (``"24Mi"`` -> 24.0), the unit of the scenario files' ``*_mb`` fields."""
    return quantity(value) / 2**20
