"""Dynamic batching: the images of concurrent requests share one forward pass.

    event loop        admit (or 503) ─> await the answer (or 504 after the timeout)
    thread pool       decode to 28x28 uint8 pixels ─> queue
    inference thread  take what is queued ─> Predictor.predict_batch (normalise, forward) ─> answer
                      each request

A batch closes when it holds ``max_batch_size`` images, or ``max_wait_s`` after its first
image was queued. The worker waits for company only while other requests are known to be
mid-preprocessing: a request that finds nothing else in flight goes straight to the
model, so batching never taxes a lone client. Under load the queue fills while a forward
pass runs, and the next pass takes everything waiting without any wait at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from app.metrics import Metrics
from app.predictor import ItemError, ModelInput, Prediction, Predictor
from models.preprocessing import ImageError, InvertMode


class QueueFullError(RuntimeError):
    """More images are in flight than the queue allows; the client should retry later."""


class InferenceTimeoutError(TimeoutError):
    """A request waited longer than the request timeout for its prediction."""


class InferenceUnavailableError(RuntimeError):
    """The inference process stopped (and is restarting), or the server is shutting down."""


def queue_full(admitted: int, max_queue: int) -> QueueFullError:
    """The refusal of a request that would take more than ``max_queue`` images in flight."""
    return QueueFullError(f"{admitted} images in flight; the queue holds {max_queue}")


def expire(future: asyncio.Future[Any], timeout_s: float) -> None:
    """Fail a request's future that is still waiting after ``timeout_s`` (a 504)."""
    if not future.done():
        future.set_exception(InferenceTimeoutError(f"no prediction within {timeout_s:g} s; retry"))


@dataclass(eq=False)
class _Job:
    """One request: its images, and the future its coroutine awaits on the event loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[torch.Tensor]]
    size: int
    results: list[torch.Tensor | None] = field(init=False)
    remaining: int = field(init=False)
    # Set on the event loop once the request is answered, failed or timed out: the worker
    # skips what is left of it. A plain bool: a stale read costs one wasted image, no more.
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.results = [None] * self.size
        self.remaining = self.size

    def resolve(self, outcome: list[torch.Tensor] | BaseException) -> None:
        """Settle the future from any thread (the loop may already be gone at shutdown)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle, outcome)

    def _settle(self, outcome: list[torch.Tensor] | BaseException) -> None:
        if self.future.done():  # timed out or cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


@dataclass(eq=False, slots=True)
class _Item:
    job: _Job
    index: int
    tensor: torch.Tensor
    queued_at: float


class Batcher:
    """Runs a Predictor's steps for many concurrent requests, one forward pass per batch."""

    def __init__(
        self,
        predictor: Predictor,
        metrics: Metrics,
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        preprocess_threads: int = 2,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or preprocess_threads < 1:
            raise ValueError("max_batch_size, max_queue and preprocess_threads must be at least 1")
        if max_wait_s < 0 or timeout_s <= 0:
            raise ValueError("max_wait_s must be at least 0 and timeout_s more than 0")
        self.predictor = predictor
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._preprocessing = 0  # jobs handed to the pool, not yet queued: company that is coming
        self._admitted = 0  # images admitted and not yet answered: what max_queue bounds
        self._closed = False
        self._pool = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="preprocess")
        self._worker = threading.Thread(target=self._run, name="inference", daemon=True)
        self._worker.start()
        metrics.queue_depth.set_function(lambda: self._admitted)

    @property
    def depth(self) -> int:
        """Images admitted and not yet answered."""
        return self._admitted

    @property
    def ready(self) -> bool:
        """Takes requests: always, for threads in this process (see ``ProcessBatcher.ready``)."""
        return not self._closed

    @property
    def waiting(self) -> int:
        """Images preprocessed and queued, not yet taken into a forward pass."""
        return len(self._queue)

    async def classify(
        self, data: bytes, top_k: int = 3, invert: InvertMode = "auto", keep_image: bool = False
    ) -> Prediction:
        """One upload through the batch queue; raises ImageError, QueueFullError, InferenceTimeoutError."""

        def prepare() -> list[ModelInput]:
            return [self.predictor.decode(data, invert, keep_image)]

        return (await self._submit(1, prepare, top_k))[0]

    async def classify_many(
        self, payloads: Sequence[bytes], top_k: int = 3, invert: InvertMode = "auto"
    ) -> list[Prediction]:
        """Several uploads, in order; the first bad one raises ItemError naming its index."""

        def prepare() -> list[ModelInput]:
            items = []
            for index, data in enumerate(payloads):
                try:
                    items.append(self.predictor.decode(data, invert))
                except ImageError as exc:
                    raise ItemError(index, exc) from exc
            return items

        return await self._submit(len(payloads), prepare, top_k)

    async def _submit(
        self, size: int, prepare: Callable[[], list[ModelInput]], top_k: int
    ) -> list[Prediction]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._admitted + size > self.max_queue:
                raise queue_full(self._admitted, self.max_queue)
            self._admitted += size
            self._preprocessing += 1
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), size)
        timer = loop.call_later(self.timeout_s, expire, job.future, self.timeout_s)
        try:
            inputs: list[ModelInput] = []
            try:
                self._pool.submit(self._preprocess, job, prepare, inputs)
            except RuntimeError:  # the pool shut down under us
                with self._cond:
                    self._preprocessing -= 1
                raise
            probabilities = await job.future
            return [
                Prediction(
                    self.predictor.postprocess(probs, top_k), item.original_size, item.inverted, item.image
                )
                for item, probs in zip(inputs, probabilities, strict=True)
            ]
        finally:
            timer.cancel()
            job.abandoned = True  # a no-op once answered; after a timeout, its images are skipped
            with self._cond:
                self._admitted -= size

    def _preprocess(
        self, job: _Job, prepare: Callable[[], list[ModelInput]], inputs: list[ModelInput]
    ) -> None:
        """In the pool: decode to pixels, then queue them for the worker."""
        try:
            inputs.extend(prepare())
        except BaseException as exc:
            with self._cond:
                self._preprocessing -= 1
                self._cond.notify()  # a waiting batch stops counting on this job
            job.resolve(exc)
            return
        now = time.perf_counter()
        with self._cond:
            self._preprocessing -= 1
            if not job.abandoned:
                self._queue.extend(_Item(job, i, item.tensor, now) for i, item in enumerate(inputs))
            self._cond.notify()

    def _run(self) -> None:
        """The inference thread: one batch at a time until closed and drained."""
        while (batch := self._next_batch()) is not None:
            if batch:
                self._infer(batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued_at + self.max_wait_s
            # Wait only for images known to be on their way; never for a client that may not come.
            while len(self._queue) < self.max_batch_size and self._preprocessing and not self._closed:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Item] = []
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                if not item.job.abandoned:
                    batch.append(item)
        return batch

    def _infer(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        for item in batch:
            self.metrics.queue_wait.observe(start - item.queued_at)
        try:
            probabilities = self.predictor.predict_batch([item.tensor for item in batch])
        except Exception as exc:
            # Every request in the batch fails (a 500, logged); the worker carries on.
            for job in {item.job: None for item in batch}:
                job.resolve(exc)
            return
        self.metrics.inference_time.observe(time.perf_counter() - start)
        self.metrics.batch_size.observe(len(batch))
        for item, probs in zip(batch, probabilities, strict=True):
            job = item.job
            job.results[item.index] = probs
            job.remaining -= 1
            if job.remaining == 0:
                job.resolve([p for p in job.results if p is not None])

    async def aclose(self, timeout: float = 10.0) -> None:
        """``close``, under the name the lifespan calls on either batcher."""
        self.close(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Answer what is queued, then stop the worker and the pool."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
