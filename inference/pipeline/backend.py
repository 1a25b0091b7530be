"""Where a pipeline stage runs its model: in-process (onnxruntime) or at a gateway/model server.

Both satisfy :class:`ModelRunner`: ``run({input: array}) -> {output: array}``. The remote
runner speaks the Open Inference Protocol with binary tensors (the codec of
:mod:`edgeaigc.inference.protocol`) and names its camera in ``X-Edgeaigc-Camera`` so that a
gateway can label its metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import httpx
import numpy as np

from edgeaigc.inference import protocol
from edgeaigc.inference.errors import InvalidInput, upstream_error_message
from edgeaigc.inference.pipeline.config import ImageInput

CAMERA_HEADER = "X-Edgeaigc-Camera"


class RemoteInferenceError(RuntimeError):
    """The gateway or server did not answer an inference request with 200."""

    def __init__(self, model: str, status_code: int | None, message: str, retry_after_s: float | None = None) -> None:
        where = "transport error" if status_code is None else f"HTTP {status_code}"
        super().__init__(f"inference of '{model}' failed ({where}): {message}")
        self.model = model
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        """When the server said to come back (429 or 503 with Retry-After), in seconds."""


def retry_after_of(response: httpx.Response) -> float | None:
    """The gateway's exact ``X-Edgeaigc-Retry-After-Ms``, else the standard ``Retry-After`` seconds."""
    for header, scale in (("x-edgeaigc-retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date or garbage: the other header, or none
    return None


class ModelRunner(Protocol):
    """Runs one model: named input arrays in, named output arrays out."""

    name: str

    def input_names(self) -> list[str]: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def first_input_name(runner: ModelRunner, role: str) -> str:
    """The name of the model's first input (what a one-input detector or classifier is fed)."""
    names = runner.input_names()
    if not names:
        raise InvalidInput(f"{role} '{runner.name}' has no inputs")
    return names[0]


ConfigT = TypeVar("ConfigT", bound=ImageInput)


class ModelStage(Generic[ConfigT]):
    """A stage of the pipeline that feeds one image tensor to one model (the detector, the classifier)."""

    #: Names the stage in configuration errors and in "has no inputs".
    role = "model"

    def __init__(self, runner: ModelRunner, config: ConfigT) -> None:
        config.validate(self.role)
        self.runner = runner
        self.config = config
        self._input_name = config.input_name

    def input_name(self) -> str:
        """The configured input, else the model's first (asked of the runner once)."""
        if self._input_name is None:
            self._input_name = first_input_name(self.runner, self.role)
        return self._input_name


class LocalRunner:
    """The model in-process with onnxruntime (one intra-op thread by default)."""

    def __init__(self, path: str | Path, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.name = Path(path).stem
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [output.name for output in self.session.get_outputs()]

    def input_names(self) -> list[str]:
        return [node.name for node in self.session.get_inputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, outputs, strict=True))


class RemoteRunner:
    """The model behind a gateway or model server (``POST {url}/v2/models/{model}/infer``).

    Args:
        url: base URL of the gateway or server.
        model: the model's name there.
        camera: sent as ``X-Edgeaigc-Camera``.
        client: a shared ``httpx.Client`` (default: one of its own, closed by :meth:`close`).
        timeout_s: per request.
    """

    def __init__(
        self,
        url: str,
        model: str,
        camera: str = "unknown",
        client: httpx.Client | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.name = model
        self.url = url.rstrip("/")
        self.camera = camera
        self._own_client = client is None
        self.client = client or httpx.Client(timeout=timeout_s)
        self._input_names: list[str] | None = None

    def input_names(self) -> list[str]:
        if self._input_names is None:
            try:
                response = self.client.get(f"{self.url}/v2/models/{self.name}", headers={CAMERA_HEADER: self.camera})
            except httpx.HTTPError as error:
                raise RemoteInferenceError(self.name, None, str(error) or type(error).__name__) from error
            if response.status_code != 200:
                raise RemoteInferenceError(self.name, response.status_code, upstream_error_message(response))
            self._input_names = [entry["name"] for entry in response.json().get("inputs", [])]
        return self._input_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        encoded = protocol.encode_infer_request(dict(inputs), binary_data=True, binary_data_output=True)
        headers = {"Content-Type": encoded.content_type, CAMERA_HEADER: self.camera, **encoded.headers}
        try:
            response = self.client.post(
                f"{self.url}/v2/models/{self.name}/infer", content=encoded.body, headers=headers
            )
        except httpx.HTTPError as error:
            raise RemoteInferenceError(self.name, None, str(error) or type(error).__name__) from error
        if response.status_code != 200:
            raise RemoteInferenceError(
                self.name, response.status_code, upstream_error_message(response), retry_after_of(response)
            )
        return protocol.decode_infer_response(response.content, response.headers.get(protocol.HEADER_CONTENT_LENGTH))

    def close(self) -> None:
        if self._own_client:
            self.client.close()
