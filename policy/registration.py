"""Gymnasium registration: ``gymnasium.make("edgeaigc/EdgePlacement-v0", scenario=...)``."""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "edgeaigc/EdgePlacement-v0"


def register_envs() -> None:
    """Register the environment (called by Gymnasium's entry point and on import)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="edgeaigc.policy.env:EdgePlacementEnv")
