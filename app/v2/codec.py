"""An inference request's body to the engine's inputs, and predictions to the protocol's response.

The body is JSON, optionally followed by binary tensor data (Triton's extension): the
``Inference-Header-Content-Length`` header says where the JSON ends, and each input with a
``binary_data_size`` parameter takes that many bytes of the rest, in order. Every size is
checked against the bytes actually received before anything is allocated from it.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from app.inference.messages import PixelType
from app.prediction import Prediction
from app.v2.schemas import InferenceRequest, Parameters, RequestInput
from models.images import INPUT_SIZE, INVERT_MODES, InvertMode

IMAGE, PIXELS = "image", "pixels"
OUTPUTS = ("probabilities", "class_index", "class_name")
# What a model with a fitted out-of-distribution score adds (``Predictor.ood``).
OOD_OUTPUTS = ("ood_score", "out_of_distribution")
PIXELS_PER_IMAGE = INPUT_SIZE * INPUT_SIZE
# numpy's little-endian types for the protocol's datatypes: binary data is little-endian.
_PIXEL_TYPES: dict[str, tuple[np.dtype[Any], PixelType]] = {
    "UINT8": (np.dtype("<u1"), "uint8"),
    "FP32": (np.dtype("<f4"), "float32"),
}
_LENGTH = struct.Struct("<I")
# Each JSON value becomes a Python object many times its text's size: a JSON body may hold
# only as many values as the largest pixel batch needs, plus room for the rest of the JSON.
_JSON_SLACK_VALUES = 1024


class ProtocolError(ValueError):
    """A request the protocol's rules refuse: answered ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Inference:
    """What one inference request asks for."""

    id: str | None
    images: list[bytes] | None  # encoded image files, or
    pixels: list[bytes] | None  # 784 values each, in ``dtype``, native byte order
    dtype: PixelType
    invert: InvertMode
    outputs: list[tuple[str, bool]]  # (name, as binary data), in the order asked for


def parse_request(
    body: bytes, header_length: str | None, max_items: int, available: Sequence[str] = OUTPUTS
) -> Inference:
    """The request's body to an ``Inference``; ProtocolError (a 400) for anything malformed.

    ``available`` names the outputs the model gives (``OUTPUTS``, and ``OOD_OUTPUTS`` with a score)."""
    header, binary = _split(body, header_length)
    if header.count(b",") > max_items * PIXELS_PER_IMAGE + _JSON_SLACK_VALUES:
        raise ProtocolError("too many JSON values; send pixels as binary data (binary_data_size)")
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise ProtocolError(f"invalid inference request: {_first_problem(exc)}") from None
    if len(request.inputs) != 1:
        names = ", ".join(repr(i.name[:64]) for i in request.inputs) or "none"
        raise ProtocolError(f"expected one input, {IMAGE!r} or {PIXELS!r}; got {names}")
    tensor = request.inputs[0]
    data = _binary_data(tensor, binary)
    request_params = request.parameters or {}
    outputs = _outputs(request, _flag(request_params, "binary_data_output"), available)
    if tensor.name == IMAGE:
        invert = _invert(tensor.parameters or {}, request_params)
        images = _images(tensor, data, max_items)
        return Inference(request.id, images, None, "uint8", invert, outputs)
    if tensor.name == PIXELS:
        pixels, dtype = _pixels(tensor, data, max_items)
        return Inference(request.id, None, pixels, dtype, "false", outputs)
    raise ProtocolError(f"unknown input {tensor.name[:64]!r}; valid: {IMAGE}, {PIXELS}")


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    length = header_length.strip()
    if not length.isdigit() or int(length) > len(body):
        detail = f"Inference-Header-Content-Length: expected a size within the body's {len(body)} bytes"
        raise ProtocolError(detail)
    end = int(length)
    return body[:end], memoryview(body)[end:]


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error.get("loc", ())) or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


def _flag(parameters: Parameters, name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"parameter {name}: expected true or false")
    return value


def _outputs(
    request: InferenceRequest, binary_default: bool, available: Sequence[str]
) -> list[tuple[str, bool]]:
    if request.outputs is None:
        return [(name, binary_default) for name in available]
    chosen: list[tuple[str, bool]] = []
    for output in request.outputs:
        if output.name not in available:
            raise ProtocolError(f"unknown output {output.name[:64]!r}; valid: {', '.join(available)}")
        if any(output.name == name for name, _ in chosen):
            raise ProtocolError(f"output {output.name!r} asked for twice")
        parameters = output.parameters or {}
        binary = _flag(parameters, "binary_data") if "binary_data" in parameters else binary_default
        chosen.append((output.name, binary))
    return chosen


def _invert(*scopes: Parameters) -> InvertMode:
    """``invert`` from the input's parameters, else the request's: as on /predict."""
    for parameters in scopes:
        if "invert" in parameters:
            value = parameters["invert"]
            text = str(value).lower() if isinstance(value, bool | str) else None
            if text not in INVERT_MODES:
                raise ProtocolError(f"parameter invert: expected one of {', '.join(INVERT_MODES)}")
            return cast(InvertMode, text)
    return "auto"


def _binary_data(tensor: RequestInput, binary: memoryview) -> memoryview | None:
    """The input's binary data, or None when it comes as JSON ``data``."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if binary.nbytes:
            raise ProtocolError("binary data after the JSON, but no input has a binary_data_size")
        if tensor.data is None:
            raise ProtocolError(f"{tensor.name[:64]}: no data (JSON data or binary_data_size)")
        return None
    if type(size) is not int or size < 0:
        raise ProtocolError(f"{tensor.name[:64]}: binary_data_size must be a whole number of bytes")
    if size != binary.nbytes:
        detail = f"{tensor.name[:64]}: binary_data_size is {size}, but {binary.nbytes} bytes follow the JSON"
        raise ProtocolError(detail)
    if tensor.data is not None:
        raise ProtocolError(f"{tensor.name[:64]}: both JSON data and binary_data_size")
    return binary


def _batch_size(tensor: RequestInput, item_shapes: Sequence[tuple[int, ...]], max_items: int) -> int:
    """N from the input's shape, which must be [N, *item_shape] for one of ``item_shapes``."""
    shape = tuple(tensor.shape)
    if not shape or shape[1:] not in item_shapes:
        expected = " or ".join("[" + ", ".join(["N", *map(str, s)]) + "]" for s in item_shapes)
        raise ProtocolError(f"{tensor.name}: expected shape {expected}, got {list(shape)}")
    n = shape[0]
    if not 1 <= n <= max_items:
        raise ProtocolError(f"{tensor.name}: {n} items; send 1 to {max_items}")
    return n


def _images(tensor: RequestInput, data: memoryview | None, max_items: int) -> list[bytes]:
    if tensor.datatype != "BYTES":
        raise ProtocolError(f"image: expected datatype BYTES, got {tensor.datatype}")
    n = _batch_size(tensor, [()], max_items)
    if data is None:
        assert tensor.data is not None
        if len(tensor.data) != n or not all(isinstance(item, str) for item in tensor.data):
            raise ProtocolError(f"image: expected {n} base64 strings in data")
        try:
            return [base64.b64decode(item, validate=True) for item in tensor.data]
        except (binascii.Error, ValueError):
            raise ProtocolError("image: data must be base64 strings (each an image file)") from None
    images, offset = [], 0
    for index in range(n):
        if offset + _LENGTH.size > data.nbytes:
            raise ProtocolError(f"image: binary data ends before element {index} of {n}")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > data.nbytes:
            raise ProtocolError(f"image[{index}]: length {length} runs past the binary data")
        images.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != data.nbytes:
        raise ProtocolError(f"image: {data.nbytes - offset} bytes left after {n} elements")
    return images


def _pixels(tensor: RequestInput, data: memoryview | None, max_items: int) -> tuple[list[bytes], PixelType]:
    if tensor.datatype not in _PIXEL_TYPES:
        raise ProtocolError(f"pixels: expected datatype UINT8 or FP32, got {tensor.datatype}")
    side = (INPUT_SIZE, INPUT_SIZE)
    n = _batch_size(tensor, [side, (1, *side)], max_items)
    wire, dtype = _PIXEL_TYPES[tensor.datatype]
    count = n * PIXELS_PER_IMAGE
    if data is not None:
        if data.nbytes != count * wire.itemsize:
            raise ProtocolError(f"pixels: {n} images of {tensor.datatype} take {count * wire.itemsize} bytes")
        array = np.frombuffer(data, dtype=wire)
    else:
        array = _json_array(tensor.data, count)
    if dtype == "uint8":
        if array.dtype.kind not in "ui" or (array.size and (array.min() < 0 or array.max() > 255)):
            raise ProtocolError("pixels: UINT8 values must be whole numbers from 0 to 255")
        native = array.astype(np.uint8, copy=False)
    else:
        if (
            array.dtype.kind not in "uif"
            or not np.isfinite(array).all()
            or array.min() < 0
            or array.max() > 1
        ):
            raise ProtocolError("pixels: FP32 values must lie in [0, 1]")
        native = array.astype(np.float32, copy=False)
    rows = native.reshape(n, PIXELS_PER_IMAGE)
    return [row.tobytes() for row in rows], dtype


def _json_array(data: list[Any] | None, count: int) -> np.ndarray[Any, Any]:
    """JSON ``data``, flat or nested in row-major order, as numbers; ProtocolError otherwise."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError("pixels: data must be numbers, flat or nested as the shape") from None
    if array.dtype.kind not in "uif":  # strings, booleans, objects, lists of uneven length
        raise ProtocolError("pixels: data must be numbers, flat or nested as the shape")
    if array.size != count:
        raise ProtocolError(f"pixels: data holds {array.size} values; the shape needs {count}")
    return array.reshape(-1)


# ---------------------------------------------------------------------------- the answer


def encode_response(
    inference: Inference, predictions: Sequence[Prediction], classes: Sequence[str], model: tuple[str, str]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary data follows it (else None)."""
    n, c = len(predictions), len(classes)
    tensors: dict[str, tuple[str, list[int], Any]] = {}
    for name, _ in inference.outputs:
        if name == "probabilities":
            probabilities = np.zeros((n, c), dtype=np.float32)
            for row, prediction in zip(probabilities, predictions, strict=True):
                for scored in prediction.top:
                    row[scored.index] = scored.probability
            tensors[name] = ("FP32", [n, c], probabilities)
        elif name == "class_index":
            tensors[name] = ("INT64", [n], np.array([p.top[0].index for p in predictions], dtype=np.int64))
        elif name == "ood_score":
            scores = [np.nan if p.ood_score is None else p.ood_score for p in predictions]
            tensors[name] = ("FP32", [n], np.array(scores, dtype=np.float32))
        elif name == "out_of_distribution":
            tensors[name] = ("BOOL", [n], np.array([bool(p.out_of_distribution) for p in predictions]))
        else:
            tensors[name] = ("BYTES", [n], [p.top[0].name for p in predictions])
    outputs, binary = [], []
    for name, as_binary in inference.outputs:
        datatype, shape, values = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = _to_binary(datatype, values)
            output["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            output["data"] = values if datatype == "BYTES" else values.reshape(-1).tolist()
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": model[0], "model_version": model[1]}
    if inference.id is not None:
        answer["id"] = inference.id
    answer["outputs"] = outputs
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not binary:
        return header, None
    return header + b"".join(binary), len(header)


def _to_binary(datatype: str, values: Any) -> bytes:
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in values]
        return b"".join(_LENGTH.pack(len(item)) + item for item in encoded)
    wire = {"FP32": "<f4", "INT64": "<i8", "BOOL": "|b1"}[datatype]
    return bytes(np.ascontiguousarray(values, dtype=wire).tobytes())
