"""The built-in (non-learned) policies by name, for the benchmark, the CLI and the operator."""

from __future__ import annotations

from collections.abc import Callable

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.baselines import LFUPolicy, LRUPolicy, RandomPolicy, StaticTopKPolicy
from edgeaigc.policy.myopic import MyopicPolicy

BUILT_IN_POLICIES: dict[str, Callable[[], PlacementPolicy]] = {
    "random": RandomPolicy,
    "lru": LRUPolicy,
    "lfu": LFUPolicy,
    "static_topk": StaticTopKPolicy,
    "myopic": MyopicPolicy,
}
