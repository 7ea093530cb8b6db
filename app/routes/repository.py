"""The model repository extension of Triton's V2 protocol: index, load and unload, live.

These calls change what every client is served, so they take their own key,
FASHION_ADMIN_KEY (``app.auth.require_admin_key``): without one configured they answer 403.
Errors are ``{"error": "..."}``, as on every /v2 route.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from app.auth import ADMIN_OPERATION, AdminKey
from app.dependencies import StateDep
from app.repository import ConflictError, LoadError, ModelRepository, UnknownModelError
from app.v2.codec import ProtocolError
from app.v2.schemas import RepositoryLoaded, RepositoryModel, V2Error

router = APIRouter(prefix="/v2/repository", tags=["v2 model repository"], dependencies=[AdminKey])

# A repository call's body is a few parameters; anything bigger is not one.
MAX_BODY_BYTES = 64 * 1024
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error} for status in (400, 401, 403, 404, 409)
}


async def _parameters(request: Request) -> dict[str, Any]:
    """The body's ``parameters`` (an empty body has none); a 400 for anything else."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"the request body is over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        request_json = json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError("the request body is not JSON") from None
    if not isinstance(request_json, dict):
        raise ProtocolError("the request body must be a JSON object")
    parameters = request_json.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters must be a JSON object")
    return parameters


def _repository(state: StateDep) -> ModelRepository:
    if state.repository is None:
        raise ProtocolError("the model is not loaded", status=503)
    return state.repository


def _loaded(repository: ModelRepository, name: str) -> RepositoryLoaded:
    return RepositoryLoaded(name=name, versions=repository.versions(name))


@router.post(
    "/index",
    response_model=list[RepositoryModel],
    response_model_exclude_none=True,  # no version key for a model not loaded
    responses=_ERRORS,
    openapi_extra=ADMIN_OPERATION,
)
async def read_repository_index(request: Request, state: StateDep) -> list[dict[str, Any]]:
    """Every model in the repository: each loaded version and its state, and the models not loaded."""
    body = await request.body()
    ready_only = False
    if body.strip():
        try:
            request_json = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
        except (ValueError, RecursionError):
            request_json = None
        if not isinstance(request_json, dict) or not isinstance(request_json.get("ready", False), bool):
            raise ProtocolError('the body must be empty or {"ready": true|false}')
        ready_only = request_json.get("ready", False)
    return _repository(state).index(ready_only)


@router.post(
    "/models/{model_name}/load",
    response_model=RepositoryLoaded,
    responses=_ERRORS,
    openapi_extra=ADMIN_OPERATION,
)
async def load_model(request: Request, state: StateDep, model_name: str) -> RepositoryLoaded:
    """Read the model's folder again: its new versions are checked, warmed up, then served;
    versions whose folder is gone are drained and unloaded. A failed load changes nothing."""
    parameters = await _parameters(request)
    if any(key == "config" or key.startswith("file:") for key in parameters):
        raise ProtocolError(
            "this server loads models from its repository only: no config or files parameters"
        )
    repository = _repository(state)
    try:
        await repository.load(model_name)
    except (LoadError, UnknownModelError, ConflictError) as exc:
        raise _refusal(exc) from None
    return _loaded(repository, model_name)


@router.post(
    "/models/{model_name}/unload",
    response_model=RepositoryLoaded,
    responses=_ERRORS,
    openapi_extra=ADMIN_OPERATION,
)
async def unload_model(request: Request, state: StateDep, model_name: str) -> RepositoryLoaded:
    """Stop serving every version of the model, once the requests using them are answered."""
    await _parameters(request)  # unload_dependents: there are no dependents here
    repository = _repository(state)
    try:
        await repository.unload(model_name)
    except (LoadError, UnknownModelError, ConflictError) as exc:
        raise _refusal(exc) from None
    return _loaded(repository, model_name)


def _refusal(exc: Exception) -> ProtocolError:
    status = 404 if isinstance(exc, UnknownModelError) else 409 if isinstance(exc, ConflictError) else 400
    return ProtocolError(str(exc), status)
