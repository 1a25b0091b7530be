"""One ONNX model behind onnxruntime: load() sets readiness, metadata, input checks, predict, batching.

:class:`OnnxModel` is the model wrapper: :meth:`OnnxModel.load` verifies the file (checksum),
opens an onnxruntime session and only then marks the model ready. :meth:`OnnxModel.infer` runs
the session in a thread pool (onnxruntime releases the GIL while it computes, so several runs
proceed in parallel and the event loop never blocks) — either directly or through a
:class:`DynamicBatcher` that stacks concurrent requests along the first dimension.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from edgeaigc.inference.delivery.artifact import sha256_of
from edgeaigc.inference.errors import InferenceFailed, InvalidInput, ModelLoadError
from edgeaigc.inference.protocol import ONNX_TYPE_TO_DATATYPE, InferInput, format_shape

#: The only version a model of the repository has (one model.onnx per model directory).
DEFAULT_VERSION = "1"


class InferenceObserver(Protocol):
    """Told about every onnxruntime run (called from a worker thread)."""

    def observe_inference(self, model: str, seconds: float, requests: int) -> None: ...


@dataclass(frozen=True)
class ModelConfig:
    """Per-model settings, from ``config.yaml`` beside ``model.onnx`` (all optional).

    Attributes:
        sha256: expected hex digest of model.onnx; loading fails on a mismatch.
        intra_op_threads: onnxruntime intra-op threads for one run of this model.
        max_batch_size: largest first dimension accepted per request and per dynamic batch (0: no limit).
        dynamic_batching: stack concurrent requests into one run (models with a dynamic first dim only).
        max_batch_delay_ms: longest a request waits for others to join its batch.
        memory_bytes: memory this model is counted for in the budget, instead of the size-based estimate.
    """

    sha256: str | None = None
    intra_op_threads: int = 1
    max_batch_size: int = 0
    dynamic_batching: bool = False
    max_batch_delay_ms: float = 2.0
    memory_bytes: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of the graph: protocol datatype and shape (-1 for a dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    symbols: tuple[str | None, ...] = field(default=(), compare=False)  # symbolic names of dynamic dims

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"datatype {self.datatype} and shape {format_shape(self.shape)}"


def _tensor_spec(node: Any, role: str) -> TensorSpec:
    datatype = ONNX_TYPE_TO_DATATYPE.get(node.type)
    if datatype is None:
        raise ModelLoadError(f"{role} '{node.name}' has type {node.type}, which the server does not support")
    dims = list(node.shape or [])
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in dims)
    symbols = tuple(dim if isinstance(dim, str) else None for dim in dims)
    return TensorSpec(node.name, datatype, shape, symbols)


class OnnxModel:
    """An ONNX model file served by one onnxruntime session.

    Args:
        name: the model's name in the repository (its directory name).
        path: the ``model.onnx`` file.
        config: per-model settings.
        executor: the thread pool that runs onnxruntime.
        observer: told the compute time of every run (metrics).
    """

    def __init__(
        self,
        name: str,
        path: Path,
        config: ModelConfig,
        executor: Executor,
        observer: InferenceObserver | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.config = config
        self.ready = False
        #: requests holding this model (only touched on the event loop, by the repository)
        self.in_flight = 0
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.batchable = False
        self._executor = executor
        self._observer = observer
        self._session: ort.InferenceSession | None = None
        self._batcher: DynamicBatcher | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def load(self) -> None:
        """Verify and open the model; the model is ready when this returns.

        Blocking (reads and hashes the file, builds the session): call it from a worker thread.

        Raises:
            ModelLoadError: missing file, checksum mismatch, corrupt or unsupported ONNX.
        """
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.name}/{self.path.name}")
        if self.config.sha256 is not None:
            actual = sha256_of(self.path)
            if actual != self.config.sha256.lower():
                raise ModelLoadError(
                    f"checksum mismatch: config.yaml expects sha256 {self.config.sha256}, file has {actual}"
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises several unrelated types for a bad file
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load ONNX model: {first_line}") from error
        self.inputs = [_tensor_spec(node, "input") for node in session.get_inputs()]
        self.outputs = [_tensor_spec(node, "output") for node in session.get_outputs()]
        self.batchable = self._has_batch_dimension()
        if self.config.dynamic_batching and self.batchable:
            self._batcher = DynamicBatcher(
                self._run_batch, self.config.max_batch_size, self.config.max_batch_delay_ms / 1000.0
            )
        self._session = session
        self.ready = True

    def unload(self) -> None:
        """Stop accepting requests; the session is released once no request holds the model."""
        self.ready = False
        if self.in_flight == 0:
            self.close()

    def close(self) -> None:
        """Release the session (memory) now."""
        self.ready = False
        self._session = None
        self._batcher = None

    @property
    def batching(self) -> bool:
        """Whether concurrent requests are stacked into one run."""
        return self._batcher is not None

    def metadata(self) -> dict[str, Any]:
        """Model metadata of the protocol: name, versions, platform, inputs and outputs."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.as_metadata() for spec in self.inputs],
            "outputs": [spec.as_metadata() for spec in self.outputs],
        }

    # -- requests ------------------------------------------------------------------------------

    def validate(self, inputs: Sequence[InferInput]) -> dict[str, np.ndarray]:
        """Check a request's tensors against the graph and return the feed for onnxruntime.

        Raises:
            InvalidInput: unknown or missing input, wrong datatype or shape — naming the expected ones.
        """
        by_name = {tensor.name: tensor for tensor in inputs}
        expected_names = [spec.name for spec in self.inputs]
        unknown = [name for name in by_name if name not in expected_names]
        if unknown:
            raise InvalidInput(
                f"model '{self.name}' has no input {', '.join(repr(n) for n in unknown)}; "
                f"its inputs are {', '.join(repr(n) for n in expected_names)}"
            )
        bound_symbols: dict[str, int] = {}
        feed: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            tensor = by_name.get(spec.name)
            if tensor is None:
                raise InvalidInput(f"model '{self.name}' needs input '{spec.name}' with {spec.describe()}")
            if not _shape_matches(spec.shape, tensor.shape) or tensor.datatype != spec.datatype:
                raise InvalidInput(
                    f"input '{spec.name}' of model '{self.name}' expects {spec.describe()}; "
                    f"got datatype {tensor.datatype} and shape {format_shape(tensor.shape)}"
                )
            for symbol, dim in zip(spec.symbols, tensor.shape, strict=False):
                if symbol is None:
                    continue
                if bound_symbols.setdefault(symbol, dim) != dim:
                    raise InvalidInput(
                        f"input '{spec.name}' of model '{self.name}': dimension '{symbol}' is {dim} here "
                        f"but {bound_symbols[symbol]} in another input"
                    )
            feed[spec.name] = _as_onnx_strings(tensor.data, spec.name) if spec.datatype == "BYTES" else tensor.data
        if self.batchable and self.config.max_batch_size > 0:
            rows = feed[self.inputs[0].name].shape[0]
            if rows > self.config.max_batch_size:
                raise InvalidInput(
                    f"batch of {rows} exceeds max_batch_size {self.config.max_batch_size} of model '{self.name}'"
                )
        return feed

    def resolve_outputs(self, requested: Sequence[str] | None) -> list[str]:
        """The outputs to compute: those requested (checked), or all of the model's."""
        known = [spec.name for spec in self.outputs]
        if requested is None:
            return known
        unknown = [name for name in requested if name not in known]
        if unknown:
            raise InvalidInput(
                f"model '{self.name}' has no output {', '.join(repr(n) for n in unknown)}; "
                f"its outputs are {', '.join(repr(n) for n in known)}"
            )
        return list(dict.fromkeys(requested))

    def predict(self, feed: dict[str, np.ndarray], output_names: list[str], requests: int = 1) -> dict[str, np.ndarray]:
        """Run the session once (blocking; call from a worker thread)."""
        session = self._session
        if session is None:
            raise InferenceFailed(f"model '{self.name}' was unloaded while a request was running")
        started = time.perf_counter()
        try:
            results = session.run(output_names, feed)
        except Exception as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InferenceFailed(f"model '{self.name}' failed: {message}") from error
        if self._observer is not None:
            self._observer.observe_inference(self.name, time.perf_counter() - started, requests)
        return dict(zip(output_names, results, strict=True))

    async def infer(self, feed: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """Run the model without blocking the event loop (batched with others when configured)."""
        if self._batcher is not None:
            return await self._batcher.submit(feed, output_names)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict, feed, output_names)

    async def _run_batch(
        self, feed: dict[str, np.ndarray], output_names: list[str], requests: int
    ) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict, feed, output_names, requests)

    def _has_batch_dimension(self) -> bool:
        """Every input and output has a dynamic first dim, and the inputs share it."""
        tensors = [*self.inputs, *self.outputs]
        if not tensors or any(not spec.shape or spec.shape[0] != -1 for spec in tensors):
            return False
        first_symbols = {spec.symbols[0] for spec in self.inputs}
        return len(first_symbols) == 1


def _as_onnx_strings(data: np.ndarray, name: str) -> np.ndarray:
    """BYTES elements as ``str``: onnxruntime's string tensors take text (it would ``str()`` bytes)."""
    strings = np.empty(data.shape, dtype=object)
    try:
        strings.flat[:] = [e.decode() if isinstance(e, bytes) else str(e) for e in data.flat]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}': BYTES elements must be UTF-8 text for an ONNX string tensor") from None
    return strings


def _shape_matches(expected: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(expected) == len(actual) and all(e in (-1, a) for e, a in zip(expected, actual, strict=True))


RunBatch = Callable[[dict[str, np.ndarray], list[str], int], Any]


@dataclass
class _Pending:
    feed: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]


class DynamicBatcher:
    """Stack concurrent requests along the first dimension, run once, split the results.

    A batch is run as soon as it holds ``max_batch_size`` rows, or ``max_delay_s`` after its
    first request arrived. Only requests with the same non-batch dimensions, dtypes and
    requested outputs are stacked together (one queue per such signature).

    Args:
        run: ``await run(feed, output_names, requests)`` runs one stacked feed.
        max_batch_size: rows per run at most (0: no limit).
        max_delay_s: how long the first request of a batch waits for others.
    """

    def __init__(self, run: RunBatch, max_batch_size: int, max_delay_s: float) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._queues: dict[tuple[Any, ...], list[_Pending]] = {}
        self._timers: dict[tuple[Any, ...], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, feed: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        key = (
            tuple((name, array.shape[1:], array.dtype.str) for name, array in sorted(feed.items())),
            tuple(output_names),
        )
        rows = next(iter(feed.values())).shape[0]
        pending = _Pending(feed, rows, loop.create_future())
        queue = self._queues.setdefault(key, [])
        queue.append(pending)
        if self.max_batch_size and _rows(queue) >= self.max_batch_size:
            self._flush(key, full_only=True)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self.max_delay_s, self._flush, key, False)
        return await pending.future

    def _flush(self, key: tuple[Any, ...], full_only: bool) -> None:
        """Start runs for the queued requests: every one (the delay is up) or full batches only."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(key, [])
        while queue and (not full_only or _rows(queue) >= self.max_batch_size):
            batch = self._take_batch(queue)
            if batch:
                task = loop.create_task(self._run_and_split(batch, list(key[1])))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if not queue:
            self._queues.pop(key, None)
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
        elif not full_only or key not in self._timers:
            self._timers[key] = loop.call_later(self.max_delay_s, self._flush, key, False)

    def _take_batch(self, queue: list[_Pending]) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while queue and (not batch or not self.max_batch_size or rows + queue[0].rows <= self.max_batch_size):
            item = queue.pop(0)
            if item.future.done():  # the client went away
                continue
            batch.append(item)
            rows += item.rows
        return batch

    async def _run_and_split(self, batch: list[_Pending], output_names: list[str]) -> None:
        total = sum(item.rows for item in batch)
        try:
            if len(batch) == 1:
                feed = batch[0].feed
            else:
                feed = {name: np.concatenate([item.feed[name] for item in batch]) for name in batch[0].feed}
            outputs = await self._run(feed, output_names, len(batch))
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != total:
                    raise InferenceFailed(
                        f"output '{name}' does not carry the batch dimension (shape {format_shape(array.shape)} "
                        f"for {total} rows); turn dynamic_batching off for this model"
                    )
        except Exception as error:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        start = 0
        for item in batch:
            stop = start + item.rows
            if not item.future.done():
                item.future.set_result({name: array[start:stop] for name, array in outputs.items()})
            start = stop


def _rows(queue: list[_Pending]) -> int:
    return sum(item.rows for item in queue)
