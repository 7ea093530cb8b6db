"""Assemble the FastAPI app. Serve it with ``uvicorn app.main:app`` or ``fashion-serve``.

Importing this module builds the app but loads nothing: settings are read and the model
is loaded by the lifespan, when a server starts it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.access_log import AccessLogMiddleware
from app.auth import ApiKeyMiddleware, protected_posts
from app.cors import ConfiguredCORS
from app.dependencies import ServiceState
from app.errors import UnexpectedErrorMiddleware, install_error_handlers
from app.head import HeadAsGetMiddleware
from app.lifespan import StartupErrorReporter, lifespan
from app.metrics import MetricsMiddleware
from app.routes import health, metrics, model, page, predict, repository, v2
from app.settings import Settings
from app.tracing import TracingMiddleware
from app.upload_limit import UploadLimitMiddleware

DESCRIPTION = """\
Classifies pictures of clothing into the ten Fashion-MNIST classes.

Upload any common image format at any size: it is converted to a 28x28 grayscale,
light-on-black picture (inverted when it is a dark item on a light background) and
normalised with the model's own statistics. Errors are JSON: `{"detail": "..."}`.
"""


def create_app(settings: Settings | None = None, span_exporter: Any = None) -> FastAPI:
    """A new app; ``settings`` default to the FASHION_* environment, read at start-up.

    ``span_exporter`` (an OpenTelemetry ``SpanExporter``) turns tracing on and receives each
    span as it ends, whatever FASHION_OTEL_ENDPOINT says: for tests.
    """
    # /docs and /redoc from Swagger UI's and ReDoc's files bundled in fastapi-offline and
    # served by the app itself: a service without internet still documents itself.
    app = FastAPIOffline(
        title="Fashion-MNIST classifier",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # No redirect from /predict/ to /predict: Starlette's would echo the Host header.
        redirect_slashes=False,
        # The validator badge would send the OpenAPI document's URL to swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    state = ServiceState(settings=settings, span_exporter=span_exporter)
    app.state.service = state
    install_error_handlers(app)
    for router in (
        predict.router,
        v2.router,
        repository.router,
        model.router,
        health.router,
        metrics.router,
        page.router,
    ):
        app.include_router(router)
    app.mount("/static", page.static_files(), name="static")
    # Added last = outermost: metrics see every request, 408s, 413s and 500s included, and
    # CORS headers go on every answer, a 500 too. Outermost of all, the request id goes on
    # every answer and each request's access line sees what the client got.
    app.add_middleware(UploadLimitMiddleware, max_bytes=state.upload_limit, body_timeout_s=state.body_timeout)
    app.add_middleware(ApiKeyMiddleware, api_key=state.api_key, protected=protected_posts(app))
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(ConfiguredCORS, origins=state.cors_origins)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(TracingMiddleware, tracing=state.current_tracing)
    app.add_middleware(StartupErrorReporter)
    app.add_middleware(AccessLogMiddleware, model=state.model_info, trusted_proxies=state.trusted_proxies)
    return app


app = create_app()
