"""Smooth weighted round-robin: which local replica of a model the gateway tries first."""

from __future__ import annotations

from collections.abc import Sequence

from edgeaigc.inference.gateway.routing_table import Endpoint


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over endpoints with weight > 0.

    Each pick adds every weight to its endpoint's running score, takes the highest score and
    subtracts the total weight from it: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
    """

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(e for e in endpoints if e.weight > 0)
        self._scores = [0.0] * len(self.endpoints)
        self._total = sum(e.weight for e in self.endpoints)

    def order(self) -> list[Endpoint]:
        """The endpoints to try, in order: this request's pick, then the others by weight."""
        if not self.endpoints:
            return []
        for i, endpoint in enumerate(self.endpoints):
            self._scores[i] += endpoint.weight
        best = max(range(len(self.endpoints)), key=lambda i: self._scores[i])
        self._scores[best] -= self._total
        rest = sorted((e for i, e in enumerate(self.endpoints) if i != best), key=lambda e: -e.weight)
        return [self.endpoints[best], *rest]
