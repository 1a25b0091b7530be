"""The Open Inference Protocol (KServe v2 REST) on the wire: datatypes, request parsing, response encoding.

Pure functions from bytes to tensors and back; nothing here knows about models, HTTP servers
or onnxruntime. Both the JSON form and the *binary tensor data extension* are handled:

- JSON: ``{"id": ..., "inputs": [{"name", "shape", "datatype", "data"}], "outputs": [...],
  "parameters": {...}}``; ``data`` is row-major, flat or nested.
- Binary: the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the
  raw bytes of each input that has ``parameters.binary_data_size`` (in the order of ``inputs``),
  little-endian, row-major; ``BOOL`` is one byte per element and ``BYTES`` elements are each a
  4-byte little-endian length followed by that many bytes. Outputs are returned the same way
  when asked for with ``parameters.binary_data`` on a requested output or
  ``parameters.binary_data_output`` on the request (a per-output setting wins).

Every malformed request raises :class:`~edgeaigc.inference.errors.InvalidInput` with a message
that names the input and what was expected.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeaigc.inference.errors import InvalidInput

try:  # orjson parses large JSON tensors about 6x and writes them about 15x faster than the json module
    import orjson
except ImportError:  # pragma: no cover - optional speed-up; the json module gives the same results
    orjson = None  # type: ignore[assignment]

#: Header that carries the length of the JSON part of a binary request or response.
HEADER_CONTENT_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

#: Protocol datatype -> numpy dtype. BF16 has no numpy type and is not supported.
DATATYPE_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

#: onnxruntime's tensor type strings -> protocol datatype.
ONNX_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_NUMERIC_KINDS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
_KIND_WORDS = {"b": "booleans", "iu": "integers", "iuf": "numbers"}


@dataclass(frozen=True)
class InferInput:
    """One input tensor of a request, already decoded to numpy."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary_data: bool | None  # None: follow the request's binary_data_output


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    id: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None  # None: every output of the model
    binary_data_output: bool = False

    @property
    def output_names(self) -> list[str] | None:
        return None if self.outputs is None else [output.name for output in self.outputs]

    def wants_binary(self, output_name: str) -> bool:
        """Whether ``output_name`` goes back as binary data."""
        for output in self.outputs or ():
            if output.name == output_name and output.binary_data is not None:
                return output.binary_data
        return self.binary_data_output


@dataclass(frozen=True)
class EncodedResponse:
    """A response body ready to send, with its JSON-header length when it carries binary data.

    ``parts`` is the body in pieces (the JSON header, then each binary tensor) for a server that
    sends them one after another instead of copying them into one buffer; ``body`` joins them.
    """

    parts: tuple[bytes | memoryview, ...]
    json_length: int | None

    @property
    def body(self) -> bytes:
        return bytes(self.parts[0]) if len(self.parts) == 1 else b"".join(self.parts)

    @property
    def body_length(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def content_type(self) -> str:
        return JSON_CONTENT_TYPE if self.json_length is None else BINARY_CONTENT_TYPE

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.json_length is None else {HEADER_CONTENT_LENGTH: str(self.json_length)}


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object and string arrays are ``BYTES``)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for datatype, dtype in DATATYPE_TO_NUMPY.items():
        if dtype == array.dtype.newbyteorder("="):
            return datatype
    raise ValueError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")


def format_shape(shape: Sequence[int]) -> str:
    """``[-1, 3]``: shapes in messages look like the JSON the client sent."""
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The JSON-header length of a binary request, or None for a plain JSON request."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(f"{HEADER_CONTENT_LENGTH} must be an integer, got '{value}'") from None
    if not 0 < length <= body_length:
        raise InvalidInput(
            f"{HEADER_CONTENT_LENGTH} is {length} but the body has {body_length} bytes; "
            "it must be between 1 and the body length"
        )
    return length


def parse_infer_request(body: bytes | memoryview, header_length: str | None = None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header plus binary tensor data).

    Args:
        body: the whole HTTP request body.
        header_length: the ``Inference-Header-Content-Length`` header, if the client sent one.

    Raises:
        InvalidInput: anything malformed, with a message naming the input and the problem.
    """
    json_length = parse_header_length(header_length, len(body))
    view = memoryview(body)
    json_part = view if json_length is None else view[:json_length]
    binary_part = view[len(view) :] if json_length is None else view[json_length:]
    document = _load_json(bytes(json_part))
    if not isinstance(document, dict):
        raise InvalidInput("the inference request must be a JSON object")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(document, "the request")
    binary_data_output = _bool_parameter(parameters, "binary_data_output", "the request") or False

    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    inputs: list[InferInput] = []
    offset = 0
    for position, raw_input in enumerate(raw_inputs):
        tensor, used = _parse_input(raw_input, position, binary_part, offset)
        if any(existing.name == tensor.name for existing in inputs):
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        inputs.append(tensor)
        offset += used
    if offset != len(binary_part):
        raise InvalidInput(
            f"the body has {len(binary_part) - offset} bytes of binary data after the last input's "
            f"binary_data_size (inputs use {offset} of {len(binary_part)} bytes)"
        )
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_parse_requested_outputs(document.get("outputs")),
        binary_data_output=binary_data_output,
    )


def _tensor_entries(
    tensors: Mapping[str, np.ndarray],
    binary: Callable[[str], bool],
    encode_binary: Callable[[np.ndarray, str], bytes | memoryview],
) -> tuple[list[dict[str, Any]], list[bytes | memoryview]]:
    """The ``inputs``/``outputs`` entries of a body and the binary parts they announce (in order).
    ``binary(name)``: whether that tensor goes as binary data."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, array in tensors.items():
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary(name):
            raw = encode_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor_to_json_data(array, datatype)
        entries.append(entry)
    return entries, chunks


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest | None = None,
) -> EncodedResponse:
    """Encode output tensors as a response, binary where ``request`` asked for it.

    A binary output that is already little-endian and contiguous goes into ``parts`` as a view
    of the array's memory, not a copy.
    """
    entries, chunks = _tensor_entries(
        outputs, lambda name: request is not None and request.wants_binary(name), binary_tensor_view
    )
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if request is not None and request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    header = _dump_json(document)
    if not chunks:
        return EncodedResponse((header,), None)
    return EncodedResponse((header, *chunks), len(header))


def encode_infer_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary_data: bool = True,
    outputs: Sequence[str] | None = None,
    binary_data_output: bool = False,
    request_id: str | None = None,
) -> EncodedResponse:
    """Client side: encode tensors as a request body (used by the gateway and the pipeline).

    Returns the body and, for binary requests, the JSON-header length to send as
    ``Inference-Header-Content-Length``.
    """
    entries, chunks = _tensor_entries(inputs, lambda _: binary_data, encode_binary_tensor)
    document: dict[str, Any] = {"inputs": entries}
    if request_id is not None:
        document["id"] = request_id
    if outputs is not None:
        document["outputs"] = [{"name": name, "parameters": {"binary_data": binary_data_output}} for name in outputs]
    elif binary_data_output:
        document["parameters"] = {"binary_data_output": True}
    header = _dump_json(document)
    if not chunks:
        return EncodedResponse((header,), None)
    return EncodedResponse((header, *chunks), len(header))


def decode_infer_response(body: bytes, header_length: str | None = None) -> dict[str, np.ndarray]:
    """Client side: the output tensors of a response body (JSON or binary)."""
    json_length = parse_header_length(header_length, len(body))
    view = memoryview(body)
    document = _load_json(bytes(view if json_length is None else view[:json_length]))
    binary_part = view[len(view) :] if json_length is None else view[json_length:]
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        raise InvalidInput("the inference response must be a JSON object with 'outputs'")
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for position, raw_output in enumerate(document["outputs"]):
        tensor, used = _parse_input(raw_output, position, binary_part, offset, what="output")
        outputs[tensor.name] = tensor.data
        offset += used
    return outputs


#: How JSON ``data`` writes non-finite floats: JSON has no NaN or Infinity (a bare ``NaN`` breaks strict
#: parsers: browsers, Go, Java), so they go as these strings, the convention of protobuf's JSON mapping
#: (and so of KServe's v2 gRPC messages written as JSON). Parsing takes them back exactly.
NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def tensor_to_json_data(array: np.ndarray, datatype: str) -> list[Any]:
    """Row-major flat list for the JSON ``data`` field (BYTES as UTF-8 text, non-finite floats as text)."""
    flat = array.ravel()
    if datatype == "BYTES":
        return [_text(element) for element in flat]
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [_float_as_json(value) for value in flat.tolist()]
    return flat.tolist()


def _float_as_json(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def encode_binary_tensor(array: np.ndarray, datatype: str) -> bytes:
    """Raw little-endian row-major bytes of a tensor (length-prefixed elements for BYTES)."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in array.ravel():
            raw = element.encode() if isinstance(element, str) else bytes(element)
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    little_endian = DATATYPE_TO_NUMPY[datatype].newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little_endian).tobytes()


def binary_tensor_view(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw bytes of a tensor as :func:`encode_binary_tensor` gives them, without a copy when possible."""
    little_endian = datatype != "BYTES" and array.dtype.byteorder in "<=|" and np.little_endian
    if little_endian and array.flags.c_contiguous and array.size:
        return array.data.cast("B")
    return encode_binary_tensor(array, datatype)


def decode_binary_tensor(raw: memoryview | bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The tensor held by ``raw`` (exactly its bytes), or InvalidInput naming what is wrong."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_binary_bytes(bytes(raw), shape, name)
    dtype = DATATYPE_TO_NUMPY[datatype]
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise InvalidInput(
            f"input '{name}': binary_data_size is {len(raw)} bytes but shape {format_shape(shape)} "
            f"of {datatype} needs {needed} bytes"
        )
    if datatype == "BOOL":
        as_bytes = np.frombuffer(raw, dtype=np.uint8)
        if as_bytes.size and as_bytes.max() > 1:
            raise InvalidInput(f"input '{name}': BOOL binary data must be bytes 0 or 1")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array.astype(dtype, copy=False)


def decode_json_tensor(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The tensor held by a JSON ``data`` field (flat or nested), checked against datatype and shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        elements = _flatten(data)
        if not all(isinstance(element, str) for element in elements):
            raise InvalidInput(f"input '{name}': data of datatype BYTES must be strings")
        if len(elements) != count:
            raise InvalidInput(
                f"input '{name}': data has {len(elements)} elements but shape {format_shape(shape)} needs {count}"
            )
        array = np.empty(count, dtype=object)
        array[:] = [element.encode() for element in elements]
        return array.reshape(shape)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"input '{name}': data is not a rectangular array of {datatype} values") from None
    if raw.dtype.kind in "UO" and datatype in FLOAT_DATATYPES:
        raw = _floats_with_non_finite_text(data, raw.shape, datatype, name)
    if raw.size != count:
        raise InvalidInput(
            f"input '{name}': data has {raw.size} elements but shape {format_shape(shape)} needs {count}"
        )
    allowed = _NUMERIC_KINDS.get(datatype, "iu")
    if raw.size and raw.dtype.kind not in allowed:
        raise InvalidInput(f"input '{name}': data of datatype {datatype} must be {_KIND_WORDS[allowed]}")
    dtype = DATATYPE_TO_NUMPY[datatype]
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"input '{name}': data out of range for {datatype} ({info.min}..{info.max})")
    return raw.astype(dtype).reshape(shape)


def _parse_input(
    raw_input: Any, position: int, binary_part: memoryview, offset: int, what: str = "input"
) -> tuple[InferInput, int]:
    """One tensor of ``inputs`` (or a response's ``outputs``) and the binary bytes it used."""
    if not isinstance(raw_input, dict):
        raise InvalidInput(f"{what} {position} must be a JSON object")
    name = raw_input.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} {position} needs a non-empty string 'name'")
    datatype = raw_input.get("datatype")
    if datatype not in DATATYPE_TO_NUMPY:
        known = ", ".join(DATATYPE_TO_NUMPY)
        raise InvalidInput(f"{what} '{name}': unknown datatype {json.dumps(datatype)} (one of {known})")
    shape = raw_input.get("shape")
    if not isinstance(shape, list) or not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):
        raise InvalidInput(f"{what} '{name}': 'shape' must be a list of integers")
    if any(dim < 0 for dim in shape):
        raise InvalidInput(f"{what} '{name}': shape {format_shape(shape)} has a negative dimension")
    parameters = _parameters(raw_input, f"{what} '{name}'")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in raw_input:
            raise InvalidInput(f"{what} '{name}' has no 'data' and no parameters.binary_data_size")
        array = decode_json_tensor(raw_input["data"], datatype, tuple(shape), name)
        return InferInput(name, datatype, tuple(shape), array), 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{what} '{name}': parameters.binary_data_size must be a non-negative integer")
    if "data" in raw_input:
        raise InvalidInput(f"{what} '{name}' has both 'data' and parameters.binary_data_size")
    if offset + size > len(binary_part):
        raise InvalidInput(
            f"{what} '{name}': binary_data_size {size} runs past the end of the body "
            f"({len(binary_part) - offset} bytes of binary data left)"
        )
    array = decode_binary_tensor(binary_part[offset : offset + size], datatype, tuple(shape), name)
    return InferInput(name, datatype, tuple(shape), array), size


def _parse_requested_outputs(raw_outputs: Any) -> list[RequestedOutput] | None:
    if raw_outputs is None:
        return None
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for position, raw_output in enumerate(raw_outputs):
        if not isinstance(raw_output, dict) or not isinstance(raw_output.get("name"), str):
            raise InvalidInput(f"output {position} must be an object with a string 'name'")
        name = raw_output["name"]
        parameters = _parameters(raw_output, f"output '{name}'")
        outputs.append(RequestedOutput(name, _bool_parameter(parameters, "binary_data", f"output '{name}'")))
    return outputs


def _parameters(document: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' of {where} must be a JSON object")
    return parameters


def _bool_parameter(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"parameters.{key} of {where} must be true or false")
    return value


def _load_json(raw: bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the json module decides (it also takes NaN and Infinity) and words the error
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deep") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, integers of over 4,300 digits
        raise InvalidInput(f"malformed JSON: {error}") from None


def _dump_json(document: dict[str, Any]) -> bytes:
    """Compact, strict JSON (tensor data carries non-finite floats as :data:`NON_FINITE_TEXT`)."""
    if orjson is not None:
        return orjson.dumps(document)
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def _floats_with_non_finite_text(data: Any, shape: tuple[int, ...], datatype: str, name: str) -> np.ndarray:
    """Float ``data`` holding "NaN", "Infinity" or "-Infinity" (:data:`NON_FINITE_TEXT`) as numbers.

    Read from ``data`` itself: numpy turned its numbers into text when it met a string among them."""
    values: list[float] = []
    for element in _flatten(data):
        if isinstance(element, str):
            if element not in NON_FINITE_TEXT:
                raise InvalidInput(
                    f"input '{name}': data of datatype {datatype} must be numbers "
                    f'(or "NaN", "Infinity", "-Infinity"), not {element[:40]!r}'
                )
            values.append(NON_FINITE_TEXT[element])
        elif isinstance(element, int | float) and not isinstance(element, bool):
            values.append(float(element))
        else:
            raise InvalidInput(f"input '{name}': data of datatype {datatype} must be numbers")
    return np.array(values, dtype=np.float64).reshape(shape)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for element in data:
        flat.extend(_flatten(element))
    return flat


def _decode_binary_bytes(raw: bytes, shape: tuple[int, ...], name: str) -> np.ndarray:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input '{name}': BYTES binary data ends inside a 4-byte length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"input '{name}': BYTES element {len(elements)} runs past its binary data")
        elements.append(raw[offset : offset + length])
        offset += length
    count = math.prod(shape)
    if len(elements) != count:
        raise InvalidInput(
            f"input '{name}': binary data holds {len(elements)} BYTES elements but shape {format_shape(shape)} "
            f"needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def _text(element: Any) -> str:
    if isinstance(element, bytes):
        return element.decode("utf-8", errors="replace")
    return str(element)
