"""Residual actors: the learned action is a correction on top of the amortised-myopic teacher.

A general actor must never do worse than the best heuristic on a fleet it never saw. Read
directly, an actor's cache scores are only as good as its training covered the world; read as a
*residual*, score 0 means "do what the teacher does" (:mod:`.demonstrator`: for the demand just
measured, the cache minimising the slot objective with optimal shares plus downloads amortised
over :data:`~edgeaigc.policy.demonstrator.DEFAULT_HORIZON_SLOTS` slots), and the actor learns
only where and by how much to depart from it. The teacher gives ``+-DEMONSTRATION_SCORE`` per
(node, model) and zero share tilts, so the applied action is
``clip(teacher + actor, -1, 1)``: an actor output beyond ``+-0.5`` flips the teacher's choice of
a pair, a smaller one only re-ranks inside the storage knapsack, and the share tilts are the
actor's own.

The mode travels with the actor: an exported actor whose metadata says
``"action_mode": "residual"`` is run this way by
:class:`~edgeaigc.policy.actor_runner.OnnxActorPolicy` (benchmark, simulate, operator alike).
numpy only: the operator runs it.
"""

from __future__ import annotations

import numpy as np

from edgeaigc.policy.demonstrator import DEFAULT_HORIZON_SLOTS, demonstration_action
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario

#: How an actor's output is read: as the action itself, or as a correction of the teacher's.
ACTION_MODES: tuple[str, ...] = ("direct", "residual")


def residual_action(
    scenario: Scenario,
    observation: Observation,
    actor_action: np.ndarray,
    horizon_slots: float = DEFAULT_HORIZON_SLOTS,
) -> np.ndarray:
    """The action applied for a residual actor's output: ``clip(teacher + actor, -1, 1)``."""
    teacher = demonstration_action(scenario, observation, horizon_slots)
    return np.clip(teacher + np.asarray(actor_action, np.float32).reshape(-1), -1.0, 1.0).astype(np.float32)
