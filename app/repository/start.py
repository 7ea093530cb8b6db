"""Start one version: its inference worker loads and checks the checkpoint, and says what
it loaded (a ``ModelCard``); only a version whose worker is ready is handed to the repository.

With a worker process (the default) this process never loads torch nor the model. For ONNX
Runtime, a process of its own loads the checkpoint, checks it, exports its graph and exits;
the worker serves that graph without torch, and a replacement worker starts from the same
graph. For torch, the worker loads the checkpoint itself. With the worker in a thread, the
predictor is loaded here and handed to it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.inference.decoders import DecoderPool
from app.inference.engine import InferenceEngine
from app.inference.hosts import ProcessHost, ThreadHost, in_fresh_process
from app.inference.messages import WorkerConfig
from app.inference.served_model import Exported
from app.inference.supervisor import WorkerHost
from app.metrics import Metrics
from app.repository.served import ServedVersion
from app.settings import Settings

if TYPE_CHECKING:
    from app.predictor import Predictor
    from app.tracing import Tracing

# The export runs at the lowest CPU priority: a live load takes the CPU that serving leaves
# (seconds longer on a saturated machine), and the requests in flight keep their latency.
EXPORT_NICENESS = 19


@dataclass(frozen=True)
class Shared:
    """What every version's engine shares: the settings, the metrics, the decoders, tracing."""

    settings: Settings
    metrics: Metrics
    decoders: DecoderPool
    tracing: Tracing | None


def _export(config: WorkerConfig) -> Exported | None:
    os.nice(EXPORT_NICENESS)  # a live load runs beside requests in flight
    from app.predictor import export_for_worker

    return export_for_worker(config)


def worker_config(settings: Settings, path: Path) -> WorkerConfig:
    """What a worker process needs to serve ``path`` as the settings say."""
    return WorkerConfig(
        model_path=str(path),
        device=settings.device,
        max_image_pixels=settings.max_image_pixels,
        flip_average=settings.flip_average,
        ood_threshold=settings.ood_threshold,
        runtime=settings.runtime,
        torch_threads=settings.torch_threads,
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000,
        spin_s=settings.worker_spin_ms / 1000,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )


async def worker_host(settings: Settings, path: Path) -> tuple[WorkerHost, Predictor | None]:
    """A process serving ``path`` (its graph exported first, unless it runs on torch), or a
    thread serving a predictor loaded here; CheckpointError or DeviceError when it cannot serve."""
    config = worker_config(settings, path)
    if not settings.inference_process:
        from app.inference.worker import Worker
        from app.predictor import Predictor, PredictorModel

        # In a thread: a live load must not stop the event loop serving the other versions.
        predictor = await asyncio.to_thread(Predictor.from_config, config)
        model = PredictorModel(predictor)
        # A thread never polls: between tasks it would take the GIL from the event loop.
        in_thread = replace(config, spin_s=0.0)
        return ThreadHost(lambda: Worker.from_config(model, in_thread)), predictor
    if settings.runtime != "torch":
        exported = await asyncio.to_thread(in_fresh_process, _export, config)
        # auto's fallback (or CUDA) serves with torch: the worker need not try the export again.
        config = replace(config, exported=exported, runtime=exported.runtime if exported else "torch")
    return ProcessHost(config), None


async def start_version(
    shared: Shared, name: str, version: str | None, rank: int, path: Path
) -> ServedVersion:
    """A ready version of ``name`` from ``path`` (``version`` None: named by its checksum).

    Raises CheckpointError or DeviceError, having started nothing that is left running.
    """
    settings = shared.settings
    host, predictor = await worker_host(settings, path)
    engine = InferenceEngine(
        shared.metrics,
        host,
        shared.decoders,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        tracing=shared.tracing,
        owns_decoders=False,
    )
    await engine.start()  # the worker has loaded and checked it, or CheckpointError
    card = engine.card
    assert card is not None
    if isinstance(host, ProcessHost) and host.config.exported is None:
        # A replacement worker loads the file again: it must be the one this worker loaded.
        host.config = replace(host.config, version=card.version)
    return ServedVersion(name, version or card.version, rank, engine, path, predictor)
