"""Backpressure: a bounded number of inference requests in flight, 503 with ``Retry-After`` past it.

Without a bound a burst queues without limit for the onnxruntime threads: memory grows with
every body held and every client waits longer. With it, requests past the bound are refused at
once; a client retries, and a gateway relays the request to the cloud instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from edgeaigc.inference.errors import ServerBusy

#: Default inference requests in flight (running or waiting for an onnxruntime thread) at once.
DEFAULT_MAX_IN_FLIGHT = 32


class InFlightLimit:
    """At most ``limit`` inference requests between their body's arrival and their answer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def check(self) -> None:
        """Raise :class:`ServerBusy` if no request could be admitted now (checked before reading a body)."""
        if self.count >= self.limit:
            raise ServerBusy(f"{self.count} inference requests are in flight, the server's limit; retry later")

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of the places while the block runs; :class:`ServerBusy` when none is free."""
        self.check()
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
