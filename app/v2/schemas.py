"""The Open Inference Protocol's JSON objects (kserve/open-inference-protocol, inference_rest.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Parameter values are scalars (bool, number, string) in the protocol.
Parameters = dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size (the batch)")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class V2Error(BaseModel):
    """Every 4xx and 5xx answer of the V2 routes."""

    error: str

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": "pixels: expected shape [N, 28, 28], got [1, 27, 27]"}]}
    )


# ---------------------------------------------------------------------------- inference


class RequestInput(BaseModel):
    """One input tensor: its data as JSON, or ``binary_data_size`` bytes after the JSON."""

    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: Parameters | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str = Field(max_length=64)
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """The JSON part of an inference request (the whole body without binary tensor data)."""

    id: str | None = Field(None, max_length=256)
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(max_length=8)
    outputs: list[RequestOutput] | None = Field(None, max_length=8)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<a PNG, base64>"]}
                    ],
                    "outputs": [{"name": "class_name"}, {"name": "probabilities"}],
                }
            ]
        }
    )


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class RepositoryModel(BaseModel):
    """One entry of the model repository index (Triton's model repository extension)."""

    name: str
    version: str | None = Field(None, description="absent for a model with no version loaded")
    state: str = Field(description="READY, or UNAVAILABLE (not loaded, or its worker restarting)")
    reason: str = Field(description="why it is unavailable; empty when READY")


class RepositoryLoaded(BaseModel):
    """What a load or unload left: the model's versions now served (none after an unload)."""

    name: str
    versions: list[str]
