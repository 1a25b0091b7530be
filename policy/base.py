"""The interface every placement policy implements, learned or not.

A policy decides from the :class:`~edgeaigc.policy.observation.Observation` alone (what was
measured up to now) and returns an action in the common action space (:mod:`.plan`); the
clairvoyant oracle is the one exception and is given the episode's trace explicitly.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario


@runtime_checkable
class PlacementPolicy(Protocol):
    """Decides each slot's action from the observation."""

    name: str

    def reset(self, scenario: Scenario, seed: int) -> None:
        """Start an episode (forget per-episode state, seed any randomness)."""

    def act(self, observation: Observation) -> np.ndarray:
        """The flat action ``[cache score E*M | compute tilt E*M | bandwidth tilt U]``."""
        ...
