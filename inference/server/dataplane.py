"""The data plane: what the server does, independent of how requests arrive (REST today).

Routes decode the wire format (:mod:`edgeaigc.inference.protocol`), call one method here and
encode what it returns; every failure is a domain exception from
:mod:`edgeaigc.inference.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.inference.errors import ServerNotReady
from edgeaigc.inference.protocol import InferInput
from edgeaigc.inference.server.repository import ModelRepository

SERVER_NAME = "edgeaigc"
EXTENSIONS = ("model_repository", "binary_tensor_data")


def _server_version() -> str:
    try:
        return metadata.version("edgeaigc")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class InferResult:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]


class DataPlane:
    """Server and model health, metadata, inference and the model repository calls."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.server_version = _server_version()

    def live(self) -> dict[str, bool]:
        return {"live": True}

    def ready(self) -> dict[str, bool]:
        """Ready once start-up loading has finished (a model that failed does not hold it back)."""
        if not self.repository.started:
            raise ServerNotReady("the server is still loading its models")
        return {"ready": True}

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.server_version, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.repository.get(name, version).metadata()

    def model_ready(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.repository.get(name, version)
        return {"name": model.name, "ready": True}

    def artifact_path(self, name: str) -> Path:
        """The file of the ready model ``name`` (verified against its config's sha256 when it was loaded).

        Only a ready model's own file: the path comes from the repository, never from a request.
        """
        return self.repository.get(name).path

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise ModelNotFound / ModelNotReady before a request body is read."""
        self.repository.get(name, version)

    async def infer(
        self, name: str, version: str | None, inputs: Sequence[InferInput], output_names: Sequence[str] | None
    ) -> InferResult:
        with self.repository.acquire(name, version) as model:
            feed = model.validate(inputs)
            outputs = model.resolve_outputs(output_names)
            results = await model.infer(feed, outputs)
        return InferResult(model.name, model.version, results)

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return self.repository.index(ready_only)

    async def load(self, name: str) -> dict[str, Any]:
        await self.repository.load(name)
        return {"name": name, "load": True}

    async def unload(self, name: str) -> dict[str, Any]:
        await self.repository.unload(name)
        return {"name": name, "unload": True}
