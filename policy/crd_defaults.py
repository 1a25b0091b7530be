"""The defaults of the custom resources' specs (``crds/*.yaml``), for code that reads a spec.

The API server fills them in on every object it stores, so a spec read from it has them; a spec
built by hand (tests, documents not yet applied) may not. :func:`with_defaults` applies them as the
API server does: an absent field takes its default, a nested field only where its parent object
exists (``reward: {}`` is itself a default, so the reward weights always get theirs; ``actor.key``
only when there is an ``actor``). ``tests/unit/test_crd_defaults.py`` checks this table against
the CRDs' schemas, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from typing import Any

#: Kind -> dotted path in ``spec`` -> default (parents before their fields).
SPEC_DEFAULTS: dict[str, dict[str, Any]] = {
    "PlacementPolicy": {
        "mode": "apply",
        "intervalSeconds": 30,
        "planningSlotSeconds": 60,
        "churnLimit": 2,
        "switchingHorizonSlots": 0,
        "sloSeconds": 0.5,
        "requestOverheadMs": 0.0,
        "prometheusURL": "http://prometheus:9090",
        "actor.key": "actor.onnx",
        "reward": {},
        "reward.alpha": 1.0,
        "reward.beta": 1.0,
        "reward.tRefSeconds": 0.1,
        "reward.cRefPerRequest": 5.0e-6,
        "cloud": {},
        "cloud.coreSpeed": 1.5,
        "cloud.pricePerCoreSecond": 1.1e-5,
        "cloud.pricePerGBTransfer": 0.09,
        "cloud.downloadPricePerGB": 2.0,
        "guard": {},
        "guard.enabled": True,
        "guard.margin": 0.05,
        "guard.windowIntervals": 5,
        "guard.minDwellIntervals": 5,
        "guard.switchingHorizonIntervals": 20,
        "guard.candidates": ["lru", "lfu", "static_topk", "myopic"],
    },
    "EdgeNode": {
        "coreSpeed": 0.3,
        "bandwidthMHz": 40,
        "backhaulMbps": 20,
        "rttMs": 80,
        "energyPricePerCoreSecond": 1.25e-7,
    },
    "InferenceModel": {
        "daypart": "any",
        "inputKB": 60,
        "outputKB": 1,
    },
    "Camera": {},
}

#: The PlacementPolicy's defaults, which scenario files share (the same reward, slot and SLO).
POLICY_DEFAULTS = SPEC_DEFAULTS["PlacementPolicy"]


def with_defaults(kind: str, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``spec`` (a ``kind``'s) with the CRD's defaults where fields are absent."""
    filled: dict[str, Any] = copy.deepcopy(dict(spec or {}))
    for path, default in SPEC_DEFAULTS[kind].items():
        *parents, field = path.split(".")
        parent: Any = filled
        for name in parents:
            parent = parent.get(name) if isinstance(parent, MutableMapping) else None
        if isinstance(parent, MutableMapping):
            parent.setdefault(field, copy.deepcopy(default))
    return filled
