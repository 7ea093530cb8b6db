"""The inference engine: the routes' ``Engine``, over one supervised worker and the decoders.

event loop   admit (or 503) ─> small uploads as they are; others through the decoders
             ─> a Task to the worker ─> await its answer (or 504 at the timeout)
worker       decode (small ones) ─> batch ─> predict ─> unbatch ─> answer
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from app.card import ModelCard
from app.inference.decoders import DecoderPool
from app.inference.messages import (
    INLINE_MAX_BYTES,
    Answered,
    Bounced,
    Decoded,
    Failed,
    Found,
    FromWorker,
    NotFinite,
    PassStats,
    PixelType,
    Refused,
    Task,
    Timings,
)
from app.inference.protocol import (
    RESTARTING,
    InferenceTimeoutError,
    InferenceUnavailableError,
    NonFiniteOutputError,
    QueueFullError,
)
from app.inference.supervisor import State, Supervisor, WorkerHost
from app.metrics import Metrics
from app.prediction import ItemError, Prediction, ScoredClass
from app.request_context import current_id
from models.images import INPUT_SIZE, InvertMode, Steps

if TYPE_CHECKING:  # the engine only calls what it is given
    from app.tracing import Tracing

_BOUNCED = object()  # a job's outcome when the worker sends it back to the decoders


@dataclass(eq=False)
class _Job:
    size: int
    many: bool
    future: asyncio.Future[object]
    sent: bool = False  # in the worker's hands: lost with it if it goes
    timings: Timings | None = None  # the worker's, for a traced request


class InferenceEngine:
    """Admission, the request timeout, and the way to and from the worker."""

    def __init__(
        self,
        metrics: Metrics,
        host: WorkerHost,
        decoders: DecoderPool,
        *,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        tracing: Tracing | None = None,
        owns_decoders: bool = True,
    ) -> None:
        if max_queue < 1 or timeout_s <= 0:
            raise ValueError("max_queue must be at least 1 and timeout_s more than 0")
        self.metrics = metrics
        self.decoders = decoders
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.tracing = tracing
        # Engines of several model versions share one pool: only its owner starts and stops it.
        self.owns_decoders = owns_decoders
        self._decode_in_worker = metrics.decode_time.labels("worker")
        self.supervisor = Supervisor(host, self._on_messages, self._on_lost)
        self._ids = itertools.count()
        self._jobs: dict[int, _Job] = {}
        self._admitted = 0
        self._closed = False
        metrics.queue_depth.set_function(lambda: self._admitted)

    @property
    def depth(self) -> int:
        """Images admitted and not yet answered."""
        return self._admitted

    @property
    def ready(self) -> bool:
        """The worker has loaded the model and takes requests (false while one restarts)."""
        return not self._closed and self.supervisor.state is State.READY

    @property
    def card(self) -> ModelCard | None:
        """The model the worker loaded, as served; None before it first says."""
        return self.supervisor.card

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid

    @property
    def restarts(self) -> int:
        return self.supervisor.restarts

    async def start(self) -> None:
        """Start the decoders and the worker; CheckpointError if the worker cannot load the model."""
        if self.owns_decoders:
            await self.decoders.start()
        try:
            await self.supervisor.start()
        except BaseException:
            if self.owns_decoders:
                await self.decoders.aclose()
            raise

    async def classify(
        self, data: bytes, top_k: int = 3, invert: InvertMode = "auto", keep_image: bool = False
    ) -> Prediction:
        """One upload; raises ImageError, QueueFullError, InferenceTimeoutError, InferenceUnavailableError."""
        return (await self._submit((data,), invert, keep_image, top_k, many=False))[0]

    async def classify_many(
        self, payloads: Sequence[bytes], top_k: int = 3, invert: InvertMode = "auto"
    ) -> list[Prediction]:
        """Several uploads, in order; the first bad one raises ItemError naming its index."""
        return await self._submit(tuple(payloads), invert, False, top_k, many=True)

    async def classify_pixels(
        self, pixels: Sequence[bytes], dtype: PixelType = "uint8", top_k: int = 3
    ) -> list[Prediction]:
        """28x28 pixel arrays a client sent (784 values each, in ``dtype``): no decoding."""
        size = INPUT_SIZE * INPUT_SIZE * (4 if dtype == "float32" else 1)
        if any(len(item) != size for item in pixels):
            raise ValueError(f"each image's pixels take {size} bytes as {dtype}")
        side = (INPUT_SIZE, INPUT_SIZE)
        uploads = tuple(Decoded(item, Steps(side, False), dtype) for item in pixels)
        return await self._submit(uploads, "false", False, top_k, many=True)

    async def _submit(
        self,
        payloads: tuple[bytes | Decoded, ...],
        invert: InvertMode,
        keep_image: bool,
        top_k: int,
        many: bool,
    ) -> list[Prediction]:
        if self._closed:
            raise InferenceUnavailableError("the server is shutting down")
        if not self.ready:
            raise InferenceUnavailableError(RESTARTING)
        size = len(payloads)
        if self._admitted + size > self.max_queue:
            raise QueueFullError(f"{self._admitted} images in flight; the queue holds {self.max_queue}")
        loop = asyncio.get_running_loop()
        job_id = next(self._ids)
        job = _Job(size, many, loop.create_future())
        deadline = time.monotonic() + self.timeout_s
        self._admitted += size
        self._jobs[job_id] = job
        # One timer handle, not asyncio.timeout(): cheaper, and this runs for every request.
        timer = loop.call_later(self.timeout_s, self._expire, job)
        # Only a request whose span is being recorded has its steps traced.
        tracing = self.tracing if self.tracing is not None and self.tracing.recording() else None
        try:
            uploads = payloads
            needs_decoders = any(
                isinstance(data, bytes) and len(data) > INLINE_MAX_BYTES for data in payloads
            )
            while True:
                if needs_decoders:
                    began = time.time_ns()
                    try:
                        uploads = await self._decode(job, payloads, invert)
                    finally:  # a refused upload's decoding is part of its trace too
                        if tracing is not None:
                            tracing.step("decode", began, time.time_ns(), **{"decode.where": "decoder"})
                traced = tracing is not None
                task = Task(job_id, uploads, invert, keep_image, top_k, deadline, current_id(), traced)
                self.supervisor.send([task])
                job.sent = True
                outcome = await job.future
                if outcome is not _BOUNCED:
                    if tracing is not None and job.timings is not None:
                        tracing.worker_steps(job.timings)
                    return outcome  # type: ignore[return-value]
                job.sent, job.future, needs_decoders = False, loop.create_future(), True
        finally:
            # Answered, failed or timed out: the place is free. A late answer finds no job.
            timer.cancel()
            self._jobs.pop(job_id, None)
            self._admitted -= size

    async def _decode(
        self, job: _Job, payloads: tuple[bytes | Decoded, ...], invert: InvertMode
    ) -> tuple[Decoded, ...]:
        """The uploads through the decoders, unless the request times out (or fails) first."""
        encoded = [data for data in payloads if isinstance(data, bytes)]
        assert len(encoded) == len(payloads), "a request holds uploads or pixels, not both"
        decoding = asyncio.ensure_future(self.decoders.decode_all(encoded, invert, job.many))
        await asyncio.wait((decoding, job.future), return_when=asyncio.FIRST_COMPLETED)
        if job.future.done():
            decoding.cancel()  # an upload still waiting for a decoder is never decoded
            decoding.add_done_callback(lambda task: task.cancelled() or task.exception())
            await job.future  # raises the timeout
            raise InferenceUnavailableError("the server is shutting down")
        return decoding.result()  # or the upload's ImageError / ItemError

    def _expire(self, job: _Job) -> None:
        if not job.future.done():
            job.future.set_exception(
                InferenceTimeoutError(f"no prediction within {self.timeout_s:g} s; retry")
            )

    def _on_messages(self, messages: Sequence[FromWorker]) -> None:
        """The worker's answers: settle each job still waiting (on the event loop)."""
        for message in messages:
            if isinstance(message, PassStats):
                self._record(message)
                continue
            job = self._jobs.get(message.job_id)  # type: ignore[union-attr]
            if job is None or job.future.done():
                continue  # timed out meanwhile
            if isinstance(message, Answered):
                job.timings = message.timings
                job.future.set_result([self._prediction(found) for found in message.found])
            elif isinstance(message, Refused):
                job.future.set_exception(
                    ItemError(message.index, message.error) if job.many else message.error
                )
            elif isinstance(message, Bounced):
                job.future.set_result(_BOUNCED)
            elif isinstance(message, NotFinite):
                job.future.set_exception(NonFiniteOutputError(message.index))
            elif isinstance(message, Failed):
                job.future.set_exception(RuntimeError(f"inference failed: {message.reason}"))

    def _prediction(self, found: Found) -> Prediction:
        assert self.supervisor.card is not None  # an answer comes from a worker that said it was ready
        names = self.supervisor.card.classes
        top = [ScoredClass(i, names[i], p) for i, p in zip(found.indices, found.probabilities, strict=True)]
        picture = Image.frombytes("L", (INPUT_SIZE, INPUT_SIZE), found.pixels) if found.pixels else None
        flagged = found.out_of_distribution
        return Prediction(top, found.steps, picture, found.ood_score, flagged)

    def _record(self, stats: PassStats) -> None:
        for seconds in stats.decode_s:
            self._decode_in_worker.observe(seconds)
        for wait in stats.queue_wait_s:
            self.metrics.queue_wait.observe(wait)
        for size, seconds in zip(stats.batch_sizes, stats.inference_s, strict=True):
            self.metrics.batch_size.observe(size)
            self.metrics.inference_time.observe(seconds)

    def _on_lost(self) -> None:
        """The worker is gone: what it held fails with 503 (what is still decoding goes to the next)."""
        for job in self._jobs.values():
            if job.sent and not job.future.done():
                job.future.set_exception(InferenceUnavailableError("the inference process stopped; retry"))

    async def aclose(self) -> None:
        """Let the worker answer what it holds and exit; fail the rest."""
        self._closed = True
        await self.supervisor.aclose()
        if self.owns_decoders:
            await self.decoders.aclose()
        for job in self._jobs.values():
            if not job.future.done():
                job.future.set_exception(InferenceUnavailableError("the server is shutting down"))
