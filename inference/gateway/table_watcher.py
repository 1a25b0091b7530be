"""The routing table as the gateway sees it: the last valid one read from the mounted file, polled for changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgeaigc.inference.gateway.routing_table import InvalidRoutingTable, RoutingTable, parse_routing_table

logger = logging.getLogger(__name__)


class RoutingTableWatcher:
    """Keeps the last valid routing table read from ``path``; :meth:`poll` re-reads it when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table: RoutingTable | None = None
        self.loads = 0
        self.errors = {"invalid": 0, "unreadable": 0}
        self.last_error: str | None = None
        self._seen: tuple[int, int, int, int] | None = None
        self._unreadable_logged = False

    def poll(self) -> bool:
        """Read the file if it changed since the last poll; True when a new valid table is in use."""
        try:
            stat = os.stat(self.path)  # follows symlinks: a ConfigMap update swaps the ..data link
        except OSError as error:
            if not self._unreadable_logged:
                self._error("unreadable", f"cannot stat {self.path}: {error.strerror or error}")
                self._unreadable_logged = True
            self._seen = None
            return False
        self._unreadable_logged = False
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key == self._seen:
            return False
        self._seen = key
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            self._error("unreadable", f"cannot read {self.path}: {error}")
            return False
        try:
            table = parse_routing_table(text)
        except InvalidRoutingTable as error:
            kept = "none" if self.table is None else f"generation {self.table.generation}"
            self._error("invalid", f"{self.path} is not a valid routing table ({error}); keeping {kept}")
            return False
        self.table = table
        self.loads += 1
        self.last_error = None
        logger.info("routing table generation %d in use (%s)", table.generation, self.path)
        return True

    def _error(self, reason: str, message: str) -> None:
        self.errors[reason] += 1
        self.last_error = message
        logger.warning("%s", message)
