"""GET /classes, /model and /models: what the served checkpoints are."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, HTTPException

from app.auth import ApiKey
from app.dependencies import NOT_LOADED, ServiceState, StateDep
from app.errors import error_responses
from app.repository import ServedVersion, UnknownModelError
from app.routes.predict import ModelName
from app.schemas import (
    ClassesResponse,
    InputInfo,
    ModelInfoResponse,
    ModelListResponse,
    ModelVersions,
    OODInfo,
)

router = APIRouter(tags=["model"])

# Training arguments that hold paths on the training machine: only their last part is
# shown, so no response reveals a directory layout.
_PATH_ARGS = {
    "data_dir",
    "cache_dir",
    "output",
    "resume",
    "images",
    "annotations",
    "test_annotations",
    "repository",
}


# Where training ran: software versions and the OS build are of no use to a client, and
# tell an attacker what to try when the server runs the same image.
_PRIVATE_MACHINE_KEYS = {"platform", "python"}


def public_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The training metrics without the training machine's OS and Python versions."""
    machine = metrics.get("machine")
    if not isinstance(machine, dict):
        return metrics
    return {**metrics, "machine": {k: v for k, v in machine.items() if k not in _PRIVATE_MACHINE_KEYS}}


def public_train_args(train_args: dict[str, Any]) -> dict[str, Any]:
    """The training arguments with path values cut to their final component."""
    return {
        key: PurePath(value).name if key in _PATH_ARGS and isinstance(value, str) and value else value
        for key, value in train_args.items()
    }


def describe_version(served: ServedVersion) -> ModelInfoResponse:
    """One version's metadata: what its checkpoint says, and how it is served."""
    card = served.card
    spec = card.input
    return ModelInfoResponse(
        model_name=served.name,
        model_version=served.version,
        version=card.version,
        sha256=card.sha256,
        arch=card.arch,
        model_args=card.model_args,
        num_parameters=card.num_parameters,
        classes=list(card.classes),
        input=InputInfo(
            height=spec.height,
            width=spec.width,
            channels=spec.channels,
            mean=list(spec.mean),
            std=list(spec.std),
        ),
        metrics=public_metrics(card.metrics),
        train_args=public_train_args(card.train_args),
        created_at=card.created_at,
        format_version=card.format_version,
        flip_average=card.flip_average,
        temperature=card.temperature,
        ood=None
        if card.ood is None
        else OODInfo(
            method=card.ood.method,
            threshold=card.ood.threshold,
            validation_flag_rate=card.ood.validation_flag_rate,
        ),
        device=card.device,
        runtime=card.runtime,
    )


def _newest(state: ServiceState, model: str | None) -> ServedVersion:
    if state.repository is None:
        raise HTTPException(503, detail=NOT_LOADED)
    try:
        return state.repository.resolve(model)
    except UnknownModelError as exc:
        raise HTTPException(404, detail=str(exc)) from None


@router.get("/classes", response_model=ClassesResponse, responses=error_responses(404, 422, 503))
async def read_classes(state: StateDep, model: ModelName = None) -> ClassesResponse:
    """The model's class names (the default model's unless ``model`` names one), in index order."""
    return ClassesResponse(classes=list(_newest(state, model).card.classes))


@router.get(
    "/model",
    response_model=ModelInfoResponse,
    responses=error_responses(401, 404, 422, 503),
    dependencies=[ApiKey],
)
async def read_model(state: StateDep, model: ModelName = None) -> ModelInfoResponse:
    """The version /predict uses (the default model's newest, or ``model``'s): its checkpoint's metadata."""
    return describe_version(_newest(state, model))


@router.get(
    "/models", response_model=ModelListResponse, responses=error_responses(401, 503), dependencies=[ApiKey]
)
async def list_models(state: StateDep) -> ModelListResponse:
    """Every model served, and each loaded version's metadata."""
    if state.repository is None:
        raise HTTPException(503, detail=NOT_LOADED)
    repository = state.repository
    return ModelListResponse(
        default_model=repository.default,
        models=[
            ModelVersions(
                name=name,
                versions=[describe_version(s) for s in sorted(versions.values(), key=lambda s: s.rank)],
            )
            for name, versions in sorted(repository.models.items())
        ],
    )
