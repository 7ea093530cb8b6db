"""The Open Inference Protocol (V2 REST): health, metadata and inference, over the same engine.

Errors are ``{"error": "..."}`` here, as the protocol says (``app.errors.error_content``).
Health and server metadata stay open like /health; the model's routes ask for the API key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import __version__
from app.auth import ApiKey
from app.card import ModelCard
from app.dependencies import ServiceState, ServingDep, StateDep
from app.errors import image_error
from app.prediction import ItemError
from app.repository import ModelRepository, ServedVersion, UnknownModelError
from app.request_context import note_predictions
from app.v2.codec import IMAGE, OOD_OUTPUTS, OUTPUTS, PIXELS, ProtocolError, encode_response, parse_request
from app.v2.schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    TensorMetadata,
    V2Error,
)
from models.images import INPUT_SIZE

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

SERVER_NAME = "fashion-mnist-serving"
EXTENSIONS = ["binary_tensor_data"]
# The network runs in eager PyTorch from a state dict, not TorchScript.
PLATFORM = "pytorch"
HEADER_LENGTH = "inference-header-content-length"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": V2Error} for status in statuses}


def _repository(state: ServiceState) -> ModelRepository:
    if state.repository is None:
        raise ProtocolError("the model is not loaded", status=503)
    return state.repository


def _resolve(repository: ModelRepository, name: str, version: str | None) -> ServedVersion:
    """The version a call names (the newest ready one when it names none); a 404 otherwise."""
    try:
        return repository.resolve(name, version)
    except UnknownModelError as exc:
        raise ProtocolError(str(exc), 404) from None


@router.get("", response_model=ServerMetadata)
async def read_server_metadata() -> ServerMetadata:
    """Server metadata: name, version and the protocol extensions supported."""
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", response_model=ServerLive)
async def read_server_live() -> ServerLive:
    """Liveness: 200 while the process serves requests."""
    return ServerLive(live=True)


@router.get("/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
async def read_server_ready(state: StateDep) -> ServerReady | JSONResponse:
    """Readiness: 200 when the model takes requests, 503 while it loads or its worker restarts."""
    if state.ready:
        return ServerReady(ready=True)
    return JSONResponse({"ready": False}, status_code=503)


async def _model_ready(state: StateDep, name: str, version: str | None) -> ModelReady | JSONResponse:
    served = _resolve(_repository(state), name, version)
    if state.status == "ok" and served.ready:
        return ModelReady(name=name, ready=True)
    return JSONResponse({"name": name, "ready": False}, status_code=503)


@router.get(
    "/models/{model_name}/ready",
    response_model=ModelReady,
    responses=_errors(404) | {503: {"model": ModelReady}},
)
async def read_model_ready(state: StateDep, model_name: str) -> ModelReady | JSONResponse:
    """Model readiness: 200 when the model takes requests."""
    return await _model_ready(state, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=ModelReady,
    responses=_errors(404) | {503: {"model": ModelReady}},
)
async def read_model_version_ready(
    state: StateDep, model_name: str, model_version: str
) -> ModelReady | JSONResponse:
    """Readiness of one version of the model."""
    return await _model_ready(state, model_name, model_version)


def _metadata(state: StateDep, name: str, version: str | None) -> ModelMetadata:
    repository = _repository(state)
    served = _resolve(repository, name, version)
    card = served.card
    side = [INPUT_SIZE, INPUT_SIZE]
    return ModelMetadata(
        name=name,
        versions=[served.version] if version is not None else repository.versions(name),
        platform=PLATFORM,
        inputs=[
            TensorMetadata(name=IMAGE, datatype="BYTES", shape=[-1]),
            TensorMetadata(name=PIXELS, datatype="UINT8", shape=[-1, *side]),
        ],
        outputs=[
            TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(card.classes)]),
            TensorMetadata(name="class_index", datatype="INT64", shape=[-1]),
            TensorMetadata(name="class_name", datatype="BYTES", shape=[-1]),
            *(
                [
                    TensorMetadata(name="ood_score", datatype="FP32", shape=[-1]),
                    TensorMetadata(name="out_of_distribution", datatype="BOOL", shape=[-1]),
                ]
                if card.ood is not None
                else []
            ),
        ],
    )


def _output_names(card: ModelCard) -> tuple[str, ...]:
    """The outputs this model gives: the out-of-distribution ones only with a fitted score."""
    return OUTPUTS + OOD_OUTPUTS if card.ood is not None else OUTPUTS


@router.get(
    "/models/{model_name}", response_model=ModelMetadata, responses=_errors(401, 404), dependencies=[ApiKey]
)
async def read_model_metadata(state: StateDep, model_name: str) -> ModelMetadata:
    """Model metadata: its versions, inputs and outputs."""
    return _metadata(state, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadata,
    responses=_errors(401, 404),
    dependencies=[ApiKey],
)
async def read_model_version_metadata(state: StateDep, model_name: str, model_version: str) -> ModelMetadata:
    """Metadata of one version of the model."""
    return _metadata(state, model_name, model_version)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references inlined: OpenAPI resolves a
    ``$ref`` from the document's root, where these definitions are not."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return dict(inline(schema))


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or JSON followed by binary tensor data (Inference-Header-Content-Length)",
        "content": {"application/json": {"schema": _inlined(InferenceRequest.model_json_schema())}},
    },
}
_INFER_ERRORS = _errors(400, 401, 404, 408, 413, 503, 504)


async def _infer(request: Request, serving: ServingDep, name: str, version: str | None) -> Response:
    _resolve(serving.repository, name, version)  # a 404 for an unknown one before the body is read
    # Read before the lease: a slow client's upload does not hold a version being unloaded.
    body = await request.body()
    # Held until its answer: a version being unloaded meanwhile finishes this request first.
    with serving.repository.use(name, version) as served:
        card = served.card
        limit = serving.settings.max_batch_files
        inference = parse_request(body, request.headers.get(HEADER_LENGTH), limit, _output_names(card))
        every_class = len(card.classes)
        if inference.images is not None:
            try:
                predictions = await served.engine.classify_many(
                    inference.images, every_class, inference.invert
                )
            except ItemError as exc:
                detail = image_error(exc.error, prefix=f"image[{exc.index}]: ", batch=True).detail
                raise ProtocolError(str(detail)) from None
        else:
            assert inference.pixels is not None
            predictions = await served.engine.classify_pixels(inference.pixels, inference.dtype, every_class)
    serving.metrics.count_predictions(predictions, served.name, served.version)
    note_predictions(predictions, (served.name, served.version))
    content, header_length = encode_response(inference, predictions, card.classes, (name, served.version))
    if header_length is None:
        return Response(content, media_type="application/json")
    headers = {"Inference-Header-Content-Length": str(header_length)}
    return Response(content, media_type="application/octet-stream", headers=headers)


@router.post(
    "/models/{model_name}/infer",
    response_model=InferenceResponse,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_DOC,
    dependencies=[ApiKey],
)
async def infer(request: Request, serving: ServingDep, model_name: str) -> Response:
    """Inference: images (BYTES) or 28x28 pixels (UINT8 0-255, FP32 0-1), JSON or binary."""
    return await _infer(request, serving, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_model=InferenceResponse,
    responses=_INFER_ERRORS,
    openapi_extra=_INFER_DOC,
    dependencies=[ApiKey],
)
async def infer_version(
    request: Request, serving: ServingDep, model_name: str, model_version: str
) -> Response:
    """Inference on one version of the model."""
    return await _infer(request, serving, model_name, model_version)
