"""Start-up and shut-down: read settings, load and warm up the models, report failures in one line."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.dependencies import ServiceState
from app.inference.decoders import DecoderLimits, DecoderPool
from app.inference.hosts import mp_context
from app.logs import configure_logging
from app.prediction import DeviceError
from app.repository import ModelRepository, ServedVersion
from app.repository.start import Shared
from app.settings import Settings, SettingsError, load_settings
from app.tracing import Tracing, otlp_exporter
from models.errors import CheckpointError
from models.repository import CHECKPOINT, RepositoryError, model_names, model_versions

logger = logging.getLogger("app")
GIL_SWITCH_INTERVAL_S = 0.0005


class StartupError(RuntimeError):
    """The service cannot start; the message is the whole story (path and reason)."""


def configure_threads(settings: Settings) -> None:
    """Thread settings for the server process (and the inference worker, when it is a thread)."""
    if settings.torch_threads and not settings.inference_process:
        import torch  # only here: with a worker process, the server never imports it

        torch.set_num_threads(settings.torch_threads)
    # Torch releases the GIL inside each operator and takes it back between them; while
    # the event loop holds it, the inference thread waits up to the switch interval at
    # every layer. Measured here beside a busy Python thread, a batch of 16 took 81 ms at
    # Python's default 5 ms and 30 ms at 0.5 ms (16 ms alone).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def describe(served: ServedVersion) -> str:
    card = served.card
    accuracy = card.test_accuracy
    # A repository's version is a number: the file's own hash says which file it is.
    checksum = f" sha256={card.version}" if served.version != card.version else ""
    return (
        f"model ready: device={card.device} arch={card.arch} "
        f"parameters={card.num_parameters:,} version={served.version} "
        f"test_accuracy={'unknown' if accuracy is None else f'{accuracy:.4f}'} model={served.name}{checksum}"
    )


def start_tracing(state: ServiceState) -> Tracing | None:
    """Tracing, when FASHION_OTEL_ENDPOINT (or a test's exporter) says where spans go."""
    assert state.settings is not None
    endpoint = state.settings.otel_endpoint
    if state.span_exporter is None and endpoint is None:
        return None
    if state.span_exporter is not None:
        state.tracing = Tracing(state.span_exporter, batch=False)
    else:
        assert endpoint is not None
        state.tracing = Tracing(otlp_exporter(endpoint))
        logger.info("sending traces to %s", endpoint)
    return state.tracing


def stop_tracing(state: ServiceState) -> None:
    tracing, state.tracing = state.tracing, None
    if tracing is not None:
        tracing.shutdown()  # what is still buffered is sent


def choose_default(settings: Settings) -> str:
    """The model /predict serves: FASHION_DEFAULT_MODEL, or the repository's only one."""
    if settings.model_repository is None:
        return settings.model_name
    if "model_path" in settings.model_fields_set:
        raise SettingsError("set FASHION_MODEL_REPOSITORY or FASHION_MODEL_PATH, not both")
    root = settings.model_repository
    try:
        names = model_names(root)
    except RepositoryError as exc:
        raise SettingsError(str(exc)) from None
    choices = ", ".join(names) or "none"
    if settings.default_model is not None:
        if settings.default_model not in names:
            raise SettingsError(
                f"FASHION_DEFAULT_MODEL={settings.default_model}: no such model in {root}; it has {choices}"
            )
        name = settings.default_model
    elif len(names) == 1:
        name = names[0]
    elif not names:
        raise SettingsError(f"{root}: no models in the repository (expected <name>/<version>/{CHECKPOINT})")
    else:
        raise SettingsError(
            f"{root} has several models ({choices}): set FASHION_DEFAULT_MODEL to one of them"
        )
    if not model_versions(root, name):
        raise SettingsError(
            f"{root / name}: the default model has no versions (expected <version>/{CHECKPOINT})"
        )
    return name


def checkpoints_to_serve(settings: Settings) -> list[Path]:
    """Every checkpoint start-up will load; SettingsError when the repository has no default."""
    if settings.model_repository is None:
        return [settings.model_path]
    choose_default(settings)
    root = settings.model_repository
    return [path for name in model_names(root) for path in model_versions(root, name).values()]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load every model version before the first request; any failure stops the server."""
    state: ServiceState = app.state.service
    state.started_at = time.monotonic()
    try:
        state.settings = state.settings or load_settings()
        configure_logging(state.settings.log_level, state.settings.log_format)
        configure_threads(state.settings)
        default = choose_default(state.settings)
    except SettingsError as exc:
        state.status = "error"
        raise StartupError(f"cannot start: {exc}") from None
    settings = state.settings
    limits = DecoderLimits(
        settings.decode_cpu_s,
        settings.decode_memory_mb * 2**20,
        settings.max_image_pixels,
        settings.log_level,
        settings.log_format,
    )
    decoding = state.metrics.decode_time.labels("decoder")
    decoders = DecoderPool(settings.decode_processes, limits, mp_context(), decoding.observe)
    shared = Shared(settings, state.metrics, decoders, start_tracing(state))
    single = None if settings.model_repository is not None else settings.model_path
    repository = ModelRepository(shared, settings.model_repository, default, single)
    await decoders.start()
    try:
        # Blocking on purpose: nothing is served until every version is ready.
        await repository.start()
    except (CheckpointError, DeviceError, RepositoryError) as exc:
        state.status = "error"
        await repository.aclose()
        await decoders.aclose()
        stop_tracing(state)
        raise StartupError(f"cannot start: {exc}") from None
    state.repository = repository
    # What start-up loaded (torch, the app, the model: some 220,000 objects) lives as long
    # as the process. Frozen, the garbage collector's full passes under load skip it.
    # Measured here at concurrency 64: without it those passes added about 0.7 s of pauses
    # to a 10-second run, and p99 went from 1.65x p50 to 2.49x.
    gc.collect()
    gc.freeze()
    state.status = "ok"
    for versions in repository.models.values():
        for served in versions.values():
            logger.info(describe(served))
    try:
        yield
    finally:
        logger.info("shutting down")
        state.repository = None
        await repository.aclose()  # what each worker holds is answered first
        await decoders.aclose()
        stop_tracing(state)
        gc.unfreeze()  # collectable again, for a process that goes on (tests start many apps)


class StartupErrorReporter:
    """Report a StartupError to the server as its one-line message, not a traceback.

    Starlette sends the formatted traceback with ``lifespan.startup.failed``, and uvicorn
    logs that message; for a missing model file a single line says it better.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def short_send(message: Message) -> None:
            # Starlette sends this from inside its ``except`` block: exc_info is the cause.
            error = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(error, StartupError):
                message = {**message, "message": str(error)}
            await send(message)

        await self.app(scope, receive, short_send)
