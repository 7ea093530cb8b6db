"""Start-up and shut-down: read settings, load and warm up the model, report failures in one line."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.dependencies import ServiceState
from app.inference.decoders import DecoderLimits, DecoderPool
from app.inference.engine import InferenceEngine
from app.inference.hosts import ProcessHost, ThreadHost, mp_context
from app.inference.supervisor import WorkerHost
from app.inference.worker import Worker, WorkerConfig
from app.logs import configure_logging
from app.predictor import DeviceError, Predictor
from app.settings import SettingsError, load_settings
from app.tracing import Tracing, otlp_exporter
from models.checkpoint import CheckpointError

logger = logging.getLogger("app")
GIL_SWITCH_INTERVAL_S = 0.0005


class StartupError(RuntimeError):
    """The service cannot start; the message is the whole story (path and reason)."""


def configure_threads(torch_threads: int) -> None:
    """Thread settings for the server process (and the inference worker, when it is a thread)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    # Torch releases the GIL inside each operator and takes it back between them; while
    # the event loop holds it, the inference thread waits up to the switch interval at
    # every layer. Measured here beside a busy Python thread, a batch of 16 took 81 ms at
    # Python's default 5 ms and 30 ms at 0.5 ms (16 ms alone).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def describe(predictor: Predictor) -> str:
    loaded = predictor.loaded
    accuracy = loaded.metrics.get("test_accuracy")
    return (
        f"model ready: device={predictor.device} arch={loaded.arch} "
        f"parameters={predictor.num_parameters:,} version={loaded.version} "
        f"test_accuracy={'unknown' if accuracy is None else f'{accuracy:.4f}'}"
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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model before the first request; any failure stops the server."""
    state: ServiceState = app.state.service
    state.started_at = time.monotonic()
    try:
        state.settings = state.settings or load_settings()
        configure_logging(state.settings.log_level, state.settings.log_format)
        configure_threads(state.settings.torch_threads)
        # Blocking on purpose: nothing is served until the model is ready.
        predictor = Predictor.load(
            state.settings.model_path,
            state.settings.device,
            state.settings.max_image_pixels,
            state.settings.flip_average,
            state.settings.ood_threshold,
        )
    except (SettingsError, CheckpointError, DeviceError) as exc:
        state.status = "error"
        raise StartupError(f"cannot start: {exc}") from None
    state.metrics.set_model(predictor)
    settings = state.settings
    max_wait_s = settings.max_batch_wait_ms / 1000
    host: WorkerHost
    if settings.inference_process:
        config = WorkerConfig(
            model_path=str(settings.model_path),
            device=settings.device,
            max_image_pixels=settings.max_image_pixels,
            flip_average=settings.flip_average,
            ood_threshold=settings.ood_threshold,
            torch_threads=settings.torch_threads,
            max_batch_size=settings.max_batch_size,
            max_wait_s=max_wait_s,
            version=predictor.version,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        host = ProcessHost(config)
    else:
        host = ThreadHost(lambda: Worker(predictor, settings.max_batch_size, max_wait_s))
    limits = DecoderLimits(
        settings.decode_cpu_s,
        settings.decode_memory_mb * 2**20,
        settings.max_image_pixels,
        settings.log_level,
        settings.log_format,
    )
    decoding = state.metrics.decode_time.labels("decoder")
    engine = InferenceEngine(
        predictor.classes,
        state.metrics,
        host,
        DecoderPool(settings.decode_processes, limits, mp_context(), decoding.observe),
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        tracing=start_tracing(state),
    )
    try:
        await engine.start()
    except CheckpointError as exc:
        state.status = "error"
        stop_tracing(state)
        raise StartupError(f"cannot start: {exc}") from None
    state.predictor, state.engine = predictor, engine
    # What start-up loaded (torch, the app, the model: some 220,000 objects) lives as long
    # as the process. Frozen, the garbage collector's full passes under load skip it.
    # Measured here at concurrency 64: without it those passes added about 0.7 s of pauses
    # to a 10-second run, and p99 went from 1.65x p50 to 2.49x.
    gc.collect()
    gc.freeze()
    state.status = "ok"
    logger.info(describe(predictor))
    try:
        yield
    finally:
        logger.info("shutting down")
        state.engine = None
        await engine.aclose()  # what the worker holds is answered first
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
