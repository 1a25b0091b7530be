"""The contract between ``edgeaigc fetch-model`` and the operator: exit codes and the reason each one means.

The init container exits with one of :class:`ExitCode`; the operator reads the code back from the
pod's terminated state (``operator/artifacts.py``) and writes the matching :data:`REASONS` entry
as the reason of the InferenceModel's ``ArtifactReady=False`` condition. Standard library only:
the operator imports it without the downloader.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of ``edgeaigc fetch-model`` (the operator reads it from the pod)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CHECKSUM_MISMATCH = 3
    SOURCE_UNREACHABLE = 4
    OVER_BUDGET = 5


#: Reason of the ``ArtifactReady=False`` condition for each failing exit status.
REASONS: dict[int, str] = {
    ExitCode.FAILED: "FetchFailed",
    ExitCode.USAGE: "FetchFailed",
    ExitCode.CHECKSUM_MISMATCH: "ChecksumMismatch",
    ExitCode.SOURCE_UNREACHABLE: "SourceUnreachable",
    ExitCode.OVER_BUDGET: "OverBudget",
}
