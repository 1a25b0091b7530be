"""PEER HARNESS for ``edgeaigc bench-serving``: one ONNX model behind KServe's Python model server.

Not part of edgeaigc's serving path: the benchmark runs this file with the Python of a separate
virtualenv that has ``kserve`` and ``onnxruntime`` (kserve pins many packages, so it is never
installed into the project's environment), to compare our server with KServe's on the same
model, machine and load generator. It imports nothing from edgeaigc.

A minimal ``kserve.Model`` subclass, as KServe's custom-model examples write one: ``load()``
opens an onnxruntime session (one intra-op thread, like our server's default) and sets
``ready``; ``predict()`` runs it on the request's inputs and returns every output, as binary
tensor data when the request asks for it. ``--threaded`` runs the session in a thread pool
(``async def predict`` + ``asyncio.to_thread``) so that concurrent requests overlap; without it
``predict`` is a plain ``def`` and KServe calls it on the event loop, one request at a time.

Usage: ``VENV/bin/python inference/bench/kserve_peer.py --model model.onnx --name yolox_nano --port 8090``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str, intra_op_threads: int) -> None:
        super().__init__(name)
        self.path = path
        self.intra_op_threads = intra_op_threads
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def run(self, request: InferRequest) -> InferResponse:
        assert self.session is not None
        feed = {infer_input.name: infer_input.as_numpy() for infer_input in request.inputs}
        names = [output.name for output in self.session.get_outputs()]
        arrays = self.session.run(names, feed)
        outputs = []
        for name, array in zip(names, arrays, strict=True):
            output = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            output.set_data_from_numpy(np.asarray(array, dtype=np.float32), binary_data=request.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=request.id, use_binary_outputs=True
        )


class SyncOnnxModel(OnnxModel):
    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        return self.run(payload)


class ThreadedOnnxModel(OnnxModel):
    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        return await asyncio.to_thread(self.run, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--threaded", action="store_true")
    parser.add_argument("--intra-op-threads", type=int, default=1)
    args = parser.parse_args()
    cls: Any = ThreadedOnnxModel if args.threaded else SyncOnnxModel
    model = cls(args.name, args.model, args.intra_op_threads)
    server = kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1, enable_latency_logging=False)
    # Per-request access and trace lines off, as in our server (logging is not what is compared).
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
