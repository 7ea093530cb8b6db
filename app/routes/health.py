"""GET /health (readiness) and /health/live (liveness)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.dependencies import StateDep
from app.schemas import HealthProblem, HealthResponse, LivenessResponse

router = APIRouter(prefix="/health", tags=["health"])

STARTUP_FAILED = "the model failed to load; see the server log"
RESTARTING = "the inference process stopped and is restarting"


@router.get(
    "",
    response_model=HealthResponse,
    responses={
        503: {
            "model": HealthProblem,
            "description": "Not ready: the model is loading, or failed to load",
            "content": {
                "application/json": {
                    "examples": {
                        "loading": {"value": {"status": "loading", "detail": None}},
                        "error": {"value": {"status": "error", "detail": STARTUP_FAILED}},
                    }
                }
            },
        }
    },
)
async def read_health(state: StateDep) -> HealthResponse | JSONResponse:
    """Readiness: 200 while the default model has a version loaded, warmed up and taking requests."""
    served = None if state.repository is None else state.repository.newest()
    if state.ready and served is not None:
        return HealthResponse(
            status="ok",
            model_name=served.name,
            model_version=served.version,
            device=served.card.device,
            uptime_s=round(time.monotonic() - state.started_at, 1),
        )
    if state.status == "error":
        problem = HealthProblem(status="error", detail=STARTUP_FAILED)
    elif state.engine is not None and not state.engine.ready:
        problem = HealthProblem(status="loading", detail=RESTARTING)
    else:
        problem = HealthProblem(status="loading")
    return JSONResponse(problem.model_dump(), status_code=503)


@router.get("/live", response_model=LivenessResponse)
async def read_liveness() -> LivenessResponse:
    """Liveness: 200 while the process serves requests, model or not."""
    return LivenessResponse(status="alive")
