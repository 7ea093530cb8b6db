"""Start one version: load and check its checkpoint, then start its inference worker.

The checkpoint is read twice, by this process (the full validation and a warm-up, for the
metadata the routes need) and by the worker, which refuses a file that changed in between.
Only a version whose worker has said it is ready is handed to the repository.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.inference.decoders import DecoderPool
from app.inference.engine import InferenceEngine
from app.inference.hosts import ProcessHost, ThreadHost
from app.inference.supervisor import WorkerHost
from app.inference.worker import Worker, WorkerConfig
from app.metrics import Metrics
from app.predictor import Predictor
from app.repository.served import ServedVersion
from app.settings import Settings

if TYPE_CHECKING:
    from app.tracing import Tracing


@dataclass(frozen=True)
class Shared:
    """What every version's engine shares: the settings, the metrics, the decoders, tracing."""

    settings: Settings
    metrics: Metrics
    decoders: DecoderPool
    tracing: Tracing | None


def load_predictor(settings: Settings, path: Path) -> Predictor:
    """Load, check and warm up a checkpoint; CheckpointError or DeviceError when it cannot serve.

    With an inference process, this copy only checks the file and describes it: it runs on
    torch, and the worker builds (and checks) the runtime that serves, which this process
    then need not hold in memory.
    """
    runtime = "torch" if settings.inference_process else settings.runtime
    return Predictor.load(
        path,
        settings.device,
        settings.max_image_pixels,
        settings.flip_average,
        settings.ood_threshold,
        runtime,
    )


def worker_host(settings: Settings, predictor: Predictor, path: Path) -> WorkerHost:
    max_wait_s = settings.max_batch_wait_ms / 1000
    if not settings.inference_process:
        return ThreadHost(lambda: Worker(predictor, settings.max_batch_size, max_wait_s))
    config = WorkerConfig(
        model_path=str(path),
        device=settings.device,
        max_image_pixels=settings.max_image_pixels,
        flip_average=settings.flip_average,
        ood_threshold=settings.ood_threshold,
        runtime=settings.runtime,
        torch_threads=settings.torch_threads,
        max_batch_size=settings.max_batch_size,
        max_wait_s=max_wait_s,
        version=predictor.version,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )
    return ProcessHost(config)


async def start_version(
    shared: Shared, name: str, version: str | None, rank: int, path: Path
) -> ServedVersion:
    """A ready version of ``name`` from ``path`` (``version`` None: named by its checksum).

    Raises CheckpointError or DeviceError, having started nothing that is left running.
    """
    settings = shared.settings
    # In a thread: a live load must not stop the event loop serving the other versions.
    predictor = await asyncio.to_thread(load_predictor, settings, path)
    engine = InferenceEngine(
        predictor.classes,
        shared.metrics,
        worker_host(settings, predictor, path),
        shared.decoders,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        tracing=shared.tracing,
        owns_decoders=False,
    )
    await engine.start()  # the worker has loaded it too, or CheckpointError
    return ServedVersion(name, version or predictor.version, rank, predictor, engine, path)
