"""POST /predict and /predict/batch: classify uploaded images."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile
from pydantic_core import to_json

from app.dependencies import Serving, get_serving
from app.errors import error_responses, image_error
from app.prediction import ItemError
from app.repository import ModelRepository, ServedVersion, UnknownModelError
from app.request_context import note_predictions
from app.schemas import BatchPredictionResponse, PredictionResponse, prediction_content
from models.images import ImageError, InvertMode
from models.repository import NAME

# No ApiKey dependency: every route here is a POST, which ApiKeyMiddleware has checked before
# the body is read (tests/app/test_auth.py). Each dependency FastAPI solves costs every request.
router = APIRouter(prefix="/predict", tags=["predict"])

TopK = Annotated[int, Query(ge=1, le=10, description="how many of the most probable classes to list")]
Invert = Annotated[
    InvertMode,
    Query(description="auto: invert when the border is mostly light (dark item on white); true; false"),
]
IncludeInput = Annotated[
    bool, Query(description="also return the 28x28 grayscale the model saw, as input_image (a PNG data URL)")
]
FILE_HELP = "a PNG, JPEG, WebP, BMP, GIF or TIFF image, any size"
ModelName = Annotated[
    str | None,
    Query(
        pattern=f"^{NAME.pattern}$",
        description="a model of the repository (its newest ready version); unset: the default model",
    ),
]


def json_answer(content: object) -> Response:
    """JSON bytes straight from the content: the route's response model documents it, and
    FastAPI would otherwise validate and serialise a model of it on every answer."""
    return Response(to_json(content), media_type="application/json")


@contextmanager
def leased(repository: ModelRepository, model: str | None) -> Iterator[ServedVersion]:
    """The model's newest ready version, held until the request is done with it; 404 if unknown."""
    try:
        repository.resolve(model)
    except UnknownModelError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    with repository.use(model) as served:  # no await between: the same version
        yield served


async def refuse_extra_files(request: Request) -> None:
    """Refuse two or more ``file`` parts, which FastAPI would quietly cut to the last one."""
    count = len((await request.form()).getlist("file"))  # already parsed: no second read
    if count > 1:
        detail = f"file: expected one file, got {count}; send several to /predict/batch"
        raise HTTPException(422, detail=detail)


@router.post(
    "",
    response_model=PredictionResponse,
    response_model_exclude_none=True,  # no input_image key unless asked for
    responses=error_responses(400, 401, 404, 408, 413, 415, 422, 500, 503, 504),
)
async def predict_image(
    request: Request,
    file: Annotated[UploadFile, File(description=FILE_HELP)],
    top_k: TopK = 3,
    invert: Invert = "auto",
    include_input: IncludeInput = False,
    model: ModelName = None,
) -> Response:
    """Classify one image."""
    # Called here rather than declared as dependencies: fewer for FastAPI to solve.
    serving = await get_serving(request)
    await refuse_extra_files(request)
    data = await file.read()
    # The model's newest version, held until its answer: a version being unloaded meanwhile
    # finishes this request first.
    with leased(serving.repository, model) as served:
        try:
            # Decoding and inference run off the event loop (app.inference), so /health still
            # answers; concurrent requests share forward passes.
            prediction = await served.engine.classify(data, top_k, invert, include_input)
        except ImageError as exc:
            raise image_error(exc) from None
    serving.metrics.count_predictions([prediction], served.name, served.version)
    note_predictions([prediction], (served.name, served.version))
    return json_answer(prediction_content(prediction, served.name, served.version))


@router.post(
    "/batch",
    response_model=BatchPredictionResponse,
    response_model_exclude_none=True,
    responses=error_responses(
        400,
        401,
        404,
        408,
        413,
        422,
        500,
        503,
        504,
        overrides={
            400: (
                "A file is empty, not an image, truncated or over the pixel limit (the detail names "
                "its index and filename), or there are more files than allowed",
                "files[2] (scan.pdf): the file is PDF, not an image; send a PNG, JPEG, WebP, BMP, GIF "
                "or TIFF image",
            )
        },
    ),
)
async def predict_batch(
    request: Request,
    # min_length: the OpenAPI says minItems 1, since an empty list is sent as no part (a 422).
    files: Annotated[list[UploadFile], File(description=f"one or more images: {FILE_HELP}", min_length=1)],
    top_k: TopK = 3,
    invert: Invert = "auto",
    model: ModelName = None,
) -> Response:
    """Classify several images in one request; one bad file fails the whole request."""
    serving: Serving = await get_serving(request)
    limit = serving.settings.max_batch_files
    if len(files) > limit:
        raise HTTPException(400, detail=f"too many files: {len(files)}; at most {limit}")
    payloads = [await upload.read() for upload in files]
    with leased(serving.repository, model) as served:
        try:
            predictions = await served.engine.classify_many(payloads, top_k, invert)
        except ItemError as exc:
            name = _short_name(files[exc.index].filename)
            raise image_error(exc.error, prefix=f"files[{exc.index}] {name}: ", batch=True) from None
    serving.metrics.count_predictions(predictions, served.name, served.version)
    note_predictions(predictions, (served.name, served.version))
    contents = [prediction_content(p, served.name, served.version) for p in predictions]
    return json_answer({"predictions": contents})


def _short_name(filename: str | None) -> str:
    # The client's own name for the file, capped: it is echoed back, not trusted.
    return f"({(filename or '')[:100]})"
