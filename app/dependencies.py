"""The service's state, held on the app, and the dependencies routes use to reach it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr

from app.inference.protocol import Engine
from app.metrics import Metrics
from app.settings import Settings

if TYPE_CHECKING:
    from app.predictor import Predictor
    from app.repository import ModelRepository
    from app.tracing import Tracing

NOT_LOADED = "the model is not loaded"


@dataclass
class ServiceState:
    """What the lifespan sets up: settings (read there unless given), the models (each
    version with its inference engine), metrics."""

    settings: Settings | None
    metrics: Metrics = field(default_factory=Metrics)
    status: Literal["loading", "ok", "error"] = "loading"
    repository: ModelRepository | None = None
    started_at: float = field(default_factory=time.monotonic)
    tracing: Tracing | None = None  # set by the lifespan when traces are sent somewhere
    # Where spans go instead of FASHION_OTEL_ENDPOINT (tests: an in-memory exporter).
    span_exporter: Any = None

    def upload_limit(self) -> int:
        if self.settings is None:  # the lifespan has not read them yet: the default holds
            return int(Settings.model_fields["max_upload_bytes"].default)
        return self.settings.max_upload_bytes

    def body_timeout(self) -> float:
        if self.settings is None:
            return float(Settings.model_fields["body_timeout_s"].default)
        return self.settings.body_timeout_s

    @property
    def predictor(self) -> Predictor | None:
        """The default model's newest version's predictor, where its worker is a thread of
        this process (tests, debugging); None before it is loaded, or with a worker process."""
        served = None if self.repository is None else self.repository.newest()
        return None if served is None else served.predictor

    @property
    def engine(self) -> Engine | None:
        """The default model's newest version's inference engine; None before it is loaded."""
        served = None if self.repository is None else self.repository.newest()
        return None if served is None else served.engine

    @property
    def ready(self) -> bool:
        """The default model has a version whose inference worker takes requests."""
        repository = self.repository
        return self.status == "ok" and repository is not None and repository.default_ready

    def api_key(self) -> SecretStr | None:
        return None if self.settings is None else self.settings.api_key

    def cors_origins(self) -> tuple[str, ...]:
        return () if self.settings is None else self.settings.cors_origins

    def trusted_proxies(self) -> tuple[str, ...]:
        return () if self.settings is None else self.settings.trusted_proxies

    def current_tracing(self) -> Tracing | None:
        return self.tracing

    def model_info(self) -> tuple[str | None, str | None]:
        """The default model's name and newest version, for the access log; None before it is loaded."""
        served = None if self.repository is None else self.repository.newest()
        return (None, None) if served is None else (served.name, served.version)


def service_state(request: Request) -> ServiceState:
    """The state the lifespan fills in, held on the app."""
    state: ServiceState = request.app.state.service
    return state


def loaded_settings(state: ServiceState) -> Settings:
    """The settings once the lifespan has read them; before that, a 503."""
    if state.settings is None:
        raise HTTPException(503, detail=NOT_LOADED)
    return state.settings


# The dependencies are async although they never wait: FastAPI runs a plain ``def``
# dependency in its thread pool, a round trip to another thread per dependency per request.
async def get_state(request: Request) -> ServiceState:
    return service_state(request)


async def get_metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Metrics:
    return state.metrics


@dataclass(frozen=True, slots=True)
class Serving:
    """What a prediction needs, from one dependency: each one FastAPI solves costs the
    event loop time on every request, and the loop is what limits a worker's throughput.
    The route leases the version it uses from ``repository`` (``ModelRepository.use``)."""

    repository: ModelRepository
    metrics: Metrics
    settings: Settings


async def get_serving(request: Request) -> Serving:
    state = service_state(request)
    if state.repository is None:
        raise HTTPException(503, detail=NOT_LOADED)
    return Serving(state.repository, state.metrics, loaded_settings(state))


StateDep = Annotated[ServiceState, Depends(get_state)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServingDep = Annotated[Serving, Depends(get_serving)]
