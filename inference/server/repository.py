"""The model repository: which models exist, which are loaded, and the memory budget they share.

Layout::

    DIR/
      <model-name>/
        model.onnx          the model (any standard ONNX graph onnxruntime can run)
        config.yaml         optional, see below

``config.yaml`` (every key optional; unknown keys are an error, reported on the model)::

    sha256: 9f86d0...        # expected digest of model.onnx; loading fails on a mismatch
    intra_op_threads: 1      # onnxruntime threads for one run of this model (default 1)
    max_batch_size: 8        # largest first dimension per request and per dynamic batch (0: no limit)
    dynamic_batching:        # present: stack concurrent requests (needs max_batch_size >= 1)
      max_delay_ms: 2        # longest a request waits for others (default 2)
    memory: 64Mi             # count this model as this much in the budget (default: estimate, below)

Every model has one version, ``"1"``. States: ``READY``; ``LOADING``; ``UNAVAILABLE`` with a
reason (``not loaded``, ``unloaded``, ``evicted ...``, or why loading failed). A failed load is
recorded on that model and never stops the server. **Reloading** a ready model whose files changed
loads the new files beside the old session; if that fails, the old one goes on serving (the model
stays ``READY``, the reason says why the reload failed): a corrupt download never takes a working
model offline.

Everything is read from inside the repository: a model directory, ``model.onnx`` or
``config.yaml`` that is a symbolic link to somewhere outside it is refused (links inside it, such as
those of a Kubernetes volume mounted as the repository, are fine).

**Memory budget.** A model is counted as ``file size * MEMORY_FACTOR`` unless its config says
``memory``. Loading a model that does not fit evicts loaded models that no request is using,
least recently used first; if that is not enough the load fails with the reason. Models loaded at
start-up never evict each other: those that do not fit stay ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.inference.delivery.artifact import CONFIG_FILE, MODEL_FILE, mib
from edgeaigc.inference.errors import ModelLoadError, ModelNotFound, ModelNotReady, ModelReloadFailed
from edgeaigc.inference.server.model import DEFAULT_VERSION, InferenceObserver, ModelConfig, OnnxModel

logger = logging.getLogger(__name__)


#: Memory of a loaded model per byte of its file. onnxruntime keeps the initializers (once,
#: or twice where it pre-packs MatMul/Conv weights), plus an arena for activations that grows
#: with the input size. Measured on this project's machine (onnxruntime 1.32, CPU, one intra-op
#: thread, after one run): a 4 MiB MatMul model 8-12 MiB resident (2-3x); YOLOX-Nano
#: (3.5 MiB, 416x416 input) 16 MiB per additional session (4.5x). 4 covers both; a model whose
#: activations dominate should state ``memory`` in its config.yaml.
MEMORY_FACTOR = 4.0

#: Model names: a directory name that is safe in a URL path and cannot climb out of the repository.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

_BYTE_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


def parse_byte_size(text: str | int) -> int:
    """``"512Mi"`` -> 536870912; Kubernetes-style suffixes k/M/G (powers of 1000) and Ki/Mi/Gi.

    Raises:
        ValueError: not a non-negative size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?)?\s*", str(text))
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 512Mi, 2Gi, 100M)")
    number, unit = match.groups()
    return int(float(number) * _BYTE_UNITS[(unit or "").lower()])


def read_model_config(directory: Path) -> ModelConfig:
    """The model's ``config.yaml``, or the defaults when there is none.

    Raises:
        ModelLoadError: unreadable YAML, unknown keys or values of the wrong type.
    """
    path = directory / CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadError(f"invalid {CONFIG_FILE}: {error}") from None
    if not isinstance(document, dict):
        raise ModelLoadError(f"invalid {CONFIG_FILE}: must be a mapping")
    try:
        return _config_from_document(document)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"invalid {CONFIG_FILE}: {error}") from None


def _config_from_document(document: dict[str, Any]) -> ModelConfig:
    known = {"sha256", "intra_op_threads", "max_batch_size", "dynamic_batching", "memory"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown} (known: {sorted(known)})")
    sha256 = document.get("sha256")
    if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    threads = _int_setting(document, "intra_op_threads", 1, minimum=1)
    max_batch_size = _int_setting(document, "max_batch_size", 0, minimum=0)
    batching = document.get("dynamic_batching")
    delay_ms = 2.0
    if isinstance(batching, dict):
        unknown_batching = sorted(set(batching) - {"max_delay_ms"})
        if unknown_batching:
            raise ValueError(f"unknown keys {unknown_batching} in dynamic_batching (known: ['max_delay_ms'])")
        delay = batching.get("max_delay_ms", delay_ms)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ValueError("dynamic_batching.max_delay_ms must be a non-negative number")
        delay_ms = float(delay)
    elif batching not in (None, True, False):
        raise ValueError("dynamic_batching must be a mapping (max_delay_ms) or true/false")
    dynamic_batching = batching is not None and batching is not False
    if dynamic_batching and max_batch_size < 1:
        raise ValueError("dynamic_batching needs max_batch_size >= 1")
    memory = document.get("memory")
    return ModelConfig(
        sha256=sha256,
        intra_op_threads=threads,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        max_batch_delay_ms=delay_ms,
        memory_bytes=None if memory is None else parse_byte_size(memory),
    )


def _int_setting(document: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = document.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}")
    return value


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ModelRecord:
    """What the repository knows about one model name."""

    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = "not loaded"
    model: OnnxModel | None = None
    #: memory counted against the budget (while LOADING or READY)
    memory_bytes: int = 0
    #: LRU clock value of the last load or request
    last_used: int = 0
    #: file identity at load: a load of a READY model whose files did not change is a no-op
    fingerprint: tuple[Any, ...] | None = None
    loads: int = 0
    load_failures: int = 0
    evictions: int = 0


class ModelRepository:
    """Models of a directory, loaded and unloaded on request under a memory budget.

    All methods are called on the event loop; loading runs in a worker thread of its own.

    Args:
        root: the repository directory.
        memory_budget_bytes: memory the loaded models may take together (None: unlimited).
        workers: threads that run onnxruntime for all models (default: CPU count).
        memory_factor: estimated memory per byte of model file (see :data:`MEMORY_FACTOR`).
        observer: told the compute time of every run (metrics).
        only: serve just these models of the directory (None: every model in it).
    """

    def __init__(
        self,
        root: Path,
        *,
        memory_budget_bytes: int | None = None,
        workers: int | None = None,
        memory_factor: float = MEMORY_FACTOR,
        observer: InferenceObserver | None = None,
        only: frozenset[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.only = only
        self.memory_budget_bytes = memory_budget_bytes
        self.memory_factor = memory_factor
        self.observer = observer
        self.started = False
        self.executor = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="onnxruntime")
        self._load_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._records: dict[str, ModelRecord] = {}
        self._clock = itertools.count(1)
        self._lock = asyncio.Lock()

    # -- discovery -----------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Names of the model directories now in the repository (records made for new ones)."""
        names = sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and MODEL_NAME.fullmatch(entry.name) and self._serves(entry.name) and self._inside(entry)
        )
        for name in names:
            self._records.setdefault(name, ModelRecord(name))
        return names

    def record(self, name: str) -> ModelRecord:
        """The record of ``name``: known already, or a directory of the repository.

        Raises:
            ModelNotFound: no such model.
        """
        record = self._records.get(name)
        if record is not None:
            return record
        directory = self.root / name
        if MODEL_NAME.fullmatch(name) and self._serves(name) and directory.is_dir() and self._inside(directory):
            return self._records.setdefault(name, ModelRecord(name))
        raise ModelNotFound(name)

    def _serves(self, name: str) -> bool:
        return self.only is None or name in self.only

    def _inside(self, path: Path) -> bool:
        """Whether ``path``, links followed, is inside the repository."""
        try:
            return path.resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError):  # a link loop
            return False

    def is_known(self, name: str) -> bool:
        """Whether ``name`` has a record (used to bound the model label of metrics)."""
        return name in self._records

    def records(self) -> list[ModelRecord]:
        return [self._records[name] for name in sorted(self._records)]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository index of the protocol's model repository extension."""
        self.scan()
        return [
            {"name": record.name, "version": DEFAULT_VERSION, "state": record.state.value, "reason": record.reason}
            for record in self.records()
            if not ready_only or record.state is ModelState.READY
        ]

    def memory_used(self) -> int:
        return sum(record.memory_bytes for record in self._records.values())

    # -- serving -------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> OnnxModel:
        """The ready model ``name``.

        Raises:
            ModelNotFound: no such model, or a version other than the model's.
            ModelNotReady: known but not ready; the message gives its state and reason.
        """
        record = self.record(name)
        if version is not None and version != DEFAULT_VERSION:
            raise ModelNotFound(name, version)
        if record.state is not ModelState.READY or record.model is None:
            raise ModelNotReady(name, f"state {record.state.value}: {record.reason}")
        return record.model

    @contextlib.contextmanager
    def acquire(self, name: str, version: str | None = None) -> Iterator[OnnxModel]:
        """Hold a ready model for one request: it is not evicted (nor its session freed) meanwhile."""
        model = self.get(name, version)
        self._records[name].last_used = next(self._clock)
        model.in_flight += 1
        try:
            yield model
        finally:
            model.in_flight -= 1
            if not model.ready and model.in_flight == 0:
                model.close()

    # -- loading -------------------------------------------------------------------------------

    async def start(self, preload: bool = True) -> None:
        """Load every model of the directory (without evictions) and then mark the server ready."""
        try:
            if preload:
                for name in self.scan():
                    # A failure is recorded on that model (and logged); the others still load.
                    with contextlib.suppress(ModelNotReady):
                        await self.load(name, evict=False)
            else:
                self.scan()
        finally:
            self.started = True

    async def load(self, name: str, *, evict: bool = True) -> OnnxModel:
        """Load (or reload, if its files changed) the model ``name``.

        Raises:
            ModelNotFound: no such model directory.
            ModelNotReady: loading failed; the model is UNAVAILABLE with the reason.
            ModelReloadFailed: reloading changed files failed; the model serves the previous ones.
        """
        async with self._lock:
            record = self.record(name)
            directory = self.root / name
            fingerprint = _fingerprint(directory)
            if record.state is ModelState.READY and record.model is not None and record.fingerprint == fingerprint:
                record.last_used = next(self._clock)
                return record.model
            # A reload loads the new files beside the serving session, which is kept if they fail.
            previous = record.model if record.state is ModelState.READY else None
            try:
                config = self._read_config(directory)
                model_file = directory / MODEL_FILE
                if not model_file.is_file():
                    raise ModelLoadError(f"model file not found: {name}/{MODEL_FILE}")
                if not self._inside(model_file):
                    raise ModelLoadError(f"{name}/{MODEL_FILE} is a link to outside the repository")
                needed = config.memory_bytes
                if needed is None:
                    needed = int(model_file.stat().st_size * self.memory_factor)
                self._make_room(record, needed, evict)
                if previous is None:
                    record.state, record.reason, record.memory_bytes = ModelState.LOADING, "loading", needed
                model = OnnxModel(name, model_file, config, self.executor, self.observer)
                await asyncio.get_running_loop().run_in_executor(self._load_executor, model.load)
            except ModelLoadError as error:
                raise self._failed(record, str(error), previous) from None
            except asyncio.CancelledError:
                self._failed(record, "loading was cancelled", previous)
                raise
            except Exception as error:  # a load must never take the server down
                logger.exception("unexpected error loading model %s", name)
                raise self._failed(record, f"unexpected error while loading: {error}", previous) from None
            if previous is not None:
                previous.unload()  # closed once its running requests are done
            if model.config.dynamic_batching and not model.batching:
                logger.warning(
                    "model %s: dynamic_batching ignored: not every input and output has a shared dynamic first "
                    "dimension",
                    name,
                )
            record.model, record.state, record.reason = model, ModelState.READY, ""
            record.memory_bytes = needed
            record.fingerprint, record.last_used = fingerprint, next(self._clock)
            record.loads += 1
            logger.info("model %s loaded (%s counted against the budget)", name, mib(record.memory_bytes))
            return model

    def _read_config(self, directory: Path) -> ModelConfig:
        config_file = directory / CONFIG_FILE
        if config_file.exists() and not self._inside(config_file):
            raise ModelLoadError(f"{directory.name}/{CONFIG_FILE} is a link to outside the repository")
        return read_model_config(directory)

    async def unload(self, name: str) -> None:
        """Unload ``name`` (no-op when not loaded); requests running on it finish first.

        Raises:
            ModelNotFound: no such model.
        """
        async with self._lock:
            record = self.record(name)
            if record.state is ModelState.READY:
                self._release(record, "unloaded")

    def close(self) -> None:
        """Drop every session and stop the worker threads."""
        for record in self._records.values():
            if record.model is not None:
                record.model.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    def _make_room(self, record: ModelRecord, needed: int, evict: bool) -> None:
        """Evict idle models, least recently used first, until ``needed`` bytes fit the budget."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        if needed > budget:
            raise ModelLoadError(f"needs {mib(needed)}, more than the whole memory budget of {mib(budget)}")
        # A reloading model's serving session keeps its memory until the new one is loaded.
        used = sum(other.memory_bytes for other in self._records.values())
        while used + needed > budget:
            idle = [
                other
                for other in self._records.values()
                if other is not record
                and other.state is ModelState.READY
                and other.model is not None
                and other.model.in_flight == 0
            ]
            if not evict or not idle:
                why = "models loaded at start-up evict nothing" if not evict else "every loaded model is busy"
                raise ModelLoadError(
                    f"does not fit the memory budget: needs {mib(needed)}, {mib(budget - used)} of "
                    f"{mib(budget)} free and {why}"
                )
            victim = min(idle, key=lambda other: other.last_used)
            used -= victim.memory_bytes
            self._release(victim, f"evicted (least recently used) to make room for '{record.name}'")
            victim.evictions += 1
            logger.info("model %s evicted to make room for %s", victim.name, record.name)

    def _release(self, record: ModelRecord, reason: str) -> None:
        if record.model is not None:
            record.model.unload()
        record.model, record.state, record.reason, record.memory_bytes = None, ModelState.UNAVAILABLE, reason, 0
        record.fingerprint = None

    def _failed(
        self, record: ModelRecord, reason: str, previous: OnnxModel | None = None
    ) -> ModelNotReady | ModelReloadFailed:
        """Record a failed load on the model; the error to raise to the caller.

        A failed reload leaves the ``previous`` session serving (state READY, the failure as the reason)."""
        record.load_failures += 1
        if previous is not None:
            record.reason = f"reload failed, still serving the previous files: {reason}"
            logger.warning("model %s: reload failed, still serving the previous files: %s", record.name, reason)
            return ModelReloadFailed(record.name, reason)
        self._release(record, reason)
        logger.warning("model %s failed to load: %s", record.name, reason)
        return ModelNotReady(record.name, f"state {ModelState.UNAVAILABLE.value}: {reason}")


def _fingerprint(directory: Path) -> tuple[Any, ...]:
    """Modification time and size of the model's files (None for a missing file)."""
    parts: list[Any] = []
    for file_name in (MODEL_FILE, CONFIG_FILE):
        try:
            stat = (directory / file_name).stat()
        except OSError:
            parts.append(None)
        else:
            parts.append((stat.st_mtime_ns, stat.st_size))
    return tuple(parts)
