"""A learned policy behind the counterfactual guard, as the simulator's benchmark runs it.

The operator never runs a learned policy alone: :class:`~edgeaigc.policy.guard.PolicyGuard`
scores it each interval against LRU, LFU, static top-K and myopic on the demand that came, and
hands control to the best of them while it trails by more than the margin (``spec.guard``,
defaults of the CRD). :class:`GuardedPolicy` is that pair as one
:class:`~edgeaigc.policy.base.PlacementPolicy`, so ``edgeaigc benchmark`` can score what the
operator runs (``general+guard``) beside the actor alone (``general``): one slot is one interval,
and the guard's counterfactual decisions run in the same step, as the operator runs them after
each decision.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.guard import GuardSettings, PolicyGuard
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario

#: Suffix of a guarded policy's name in the benchmark (``general+guard``).
GUARDED_SUFFIX = "+guard"


class GuardedPolicy:
    """``learned`` with the operator's guard over it.

    Args:
        learned: the learned policy (its ``name`` is the guard's name for it).
        settings: ``spec.guard`` (default: the CRD's defaults, what the operator runs).
        churn_limit, switching_horizon_slots: the environment's, so the counterfactual tracks plan as the
            applied decisions do.
    """

    def __init__(
        self,
        learned: PlacementPolicy,
        settings: GuardSettings | None = None,
        churn_limit: int | None = None,
        switching_horizon_slots: float = 0.0,
    ) -> None:
        self.learned = learned
        self.name = f"{learned.name}{GUARDED_SUFFIX}"
        self.settings = settings or GuardSettings()
        self.churn_limit = churn_limit
        self.switching_horizon_slots = switching_horizon_slots
        self.guard: PolicyGuard | None = None
        self.scenario: Scenario | None = None
        self.slots_in_control: Counter[str] = Counter()
        """Slots each candidate was in control, over every episode since construction."""
        self.switches = 0

    def reset(self, scenario: Scenario, seed: int) -> None:
        self.learned.reset(scenario, seed)
        self.scenario = scenario
        # A new episode is a new cluster: every track starts from its (empty) cache again.
        self.guard = PolicyGuard(self.learned.name, self.settings.candidates, scenario)

    def act(self, observation: Observation) -> np.ndarray:
        if self.guard is None or self.scenario is None:
            raise RuntimeError("GuardedPolicy.act before reset")
        step = self.guard.step(
            self.scenario, observation, self.learned, self.churn_limit, self.settings, self.switching_horizon_slots
        )
        self.guard.advance()  # the counterfactuals, which the operator runs once the decision is applied
        self.slots_in_control[step.in_control] += 1
        self.switches += step.switched
        return step.action
