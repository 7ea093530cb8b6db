"""Decoding and inference in a child process, so the event loop has its process's GIL alone.

    event loop (this process)   admit (or 503) ─> write the upload to a pipe ─> await (or 504)
    inference process           read what is waiting ─> decode ─> forward pass ─> answer the batch

(An upload larger than a thumbnail is decoded in this process first, on its decoding
threads, and crosses as 28x28 pixels: one big picture in the child would hold up all.)

In one process the event loop, the decoding threads and the inference thread take turns
on one GIL: measured here at concurrency 64, the process used 1.2 of the 2 cores, and a
forward pass took five times as long as offline, waiting for the GIL between operators.
With decoding and inference in a process of their own, each side has a GIL and a core;
the event loop's share of the work per request (HTTP, multipart, routing) is unchanged.
A side-by-side trial on the 2-core machine: 879 against 493 requests/s at concurrency 64.

The batching rule is the thread batcher's (``app.batching``): a forward pass takes what is
waiting, up to ``max_batch_size`` images, and waits for more only while images are known
to be on their way, here meaning already in the pipe; never past ``max_wait_s`` after its
first image. A request that finds the process idle goes straight to the model.

The child is started by multiprocessing's forkserver, which has the model code imported
already, so a (re)start costs a fork and a model load rather than a new interpreter. When
the child dies, the requests it held fail with 503 and a new one is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import torch
from PIL import Image

from app.batching import InferenceUnavailableError, expire, queue_full
from app.metrics import Metrics
from app.predictor import ItemError, ModelInput, Prediction, Predictor, ScoredClass
from models.checkpoint import CheckpointError
from models.preprocessing import INPUT_SIZE, ImageError, InvertMode

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0  # between a child's death and the next start: no hot loop on a broken model
# The child answers every pass, even one whose requests had all timed out, and gives up a
# request at its deadline, so it is never silent much longer than one request timeout
# while it has work. Silent for twice that, and at least this long, it hangs (a deadlock,
# a stuck device): it is killed and replaced.
MIN_STALL_S = 10.0
# Uploads larger than this (anything but a thumbnail) are decoded in the server process, on
# its decoding threads, and cross the pipe as 28x28 pixels: the child decodes one upload at
# a time, and one big picture there would hold up every request behind it. Measured on 2
# cores, a client posting 2000x2000 PNGs took the others from about 720 to 130 requests/s.
LARGE_UPLOAD_BYTES = 2048
STOP = None  # the message that tells the child to answer what it holds and exit


@dataclass(frozen=True)
class WorkerConfig:
    """What the child needs to load the same model the parent checked."""

    model_path: str
    device: str
    max_image_pixels: int
    flip_average: bool | None
    torch_threads: int
    max_batch_size: int
    max_wait_s: float
    version: str  # the parent's model version: the child refuses a file that changed since


class _Decoded(NamedTuple):
    """An upload the server process decoded, as it crosses the pipe."""

    pixels: bytes  # 28x28, uint8, not yet normalised: also the picture kept for include_input
    original_size: tuple[int, int]
    inverted: bool


class _Request(NamedTuple):
    """One request, as it crosses the pipe (a tuple pickles faster than an object)."""

    job_id: int
    payloads: tuple[bytes | _Decoded, ...]
    invert: InvertMode
    keep_image: bool
    top_k: int
    many: bool  # /predict/batch: a bad item is named by its index
    # time.monotonic() after which the server has answered 504: the child skips the request.
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    deadline: float


# ---------------------------------------------------------------------------- the child


def _child_main(config: WorkerConfig, requests: Connection, results: Connection) -> None:
    """The inference process: load, say ready, then serve batches until told to stop."""
    # Only the parent's STOP (or its death: the pipe closes) ends this process, so a Ctrl-C or
    # a SIGTERM sent to the whole process group lets the parent drain its requests first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        predictor = Predictor.load(
            config.model_path, config.device, config.max_image_pixels, config.flip_average
        )
    except Exception as exc:  # reported to the parent, which logs it
        results.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    if predictor.version != config.version:
        results.send(("failed", f"{config.model_path} changed since start-up (now {predictor.version})"))
        return
    gc.collect()
    gc.freeze()
    results.send(("ready", os.getpid()))
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        _serve(predictor, config, requests, results)


def _serve(predictor: Predictor, config: WorkerConfig, requests: Connection, results: Connection) -> None:
    stopping = False
    while not stopping:
        first = requests.recv()
        if first is STOP:
            return
        received = [(time.perf_counter(), first)]
        deadline = received[0][0] + config.max_wait_s
        answers: list[tuple[int, Any]] = []
        items: list[tuple[int, int, Any]] = []  # (job position, item index, decoded input)
        decoded_jobs = 0
        images = 0
        while True:
            for position in range(decoded_jobs, len(received)):
                images += _decode(predictor, position, received[position][1], items, answers)
            decoded_jobs = len(received)
            # More company only if it is already in the pipe, there is room, and time.
            if images >= config.max_batch_size or time.perf_counter() > deadline or not requests.poll(0):
                break
            message = requests.recv()
            if message is STOP:
                stopping = True
                break
            received.append((time.perf_counter(), message))
        # Sent even when every request had timed out: the server hears the child is alive.
        stats = _infer(predictor, config.max_batch_size, received, items, answers)
        results.send((answers, stats))


def _decode(
    predictor: Predictor, position: int, request: _Request, items: list[tuple[int, int, Any]], answers: list
) -> int:
    """Decode one request's uploads into ``items``; a bad one answers the whole request."""
    decoded = []
    for index, data in enumerate(request.payloads):
        if time.monotonic() > request.deadline:
            return 0  # already answered 504 (or about to be): no one is waiting for the work
        try:
            if isinstance(data, _Decoded):
                decoded.append(_model_input(data, request.keep_image))
            else:
                decoded.append(predictor.decode(data, request.invert, request.keep_image))
        except ImageError as exc:
            answers.append((request.job_id, ("image_error", index if request.many else None, exc)))
            return 0
        except Exception as exc:  # a decoder bug: this request fails (a 500), the process goes on
            answers.append((request.job_id, ("error", f"{type(exc).__name__}: {exc}")))
            return 0
    items.extend((position, index, item) for index, item in enumerate(decoded))
    return len(decoded)


def _picture(pixels: bytes) -> Image.Image:
    """28x28 uint8 pixels, as they cross the pipe either way, as the picture the network saw."""
    return Image.frombytes("L", (INPUT_SIZE, INPUT_SIZE), pixels)


def _model_input(item: _Decoded, keep_image: bool) -> ModelInput:
    tensor = torch.frombuffer(bytearray(item.pixels), dtype=torch.uint8).view(1, INPUT_SIZE, INPUT_SIZE)
    image = _picture(item.pixels) if keep_image else None
    return ModelInput(tensor=tensor, original_size=item.original_size, inverted=item.inverted, image=image)


def _infer(
    predictor: Predictor,
    max_batch_size: int,
    received: list[tuple[float, _Request]],
    items: list[tuple[int, int, Any]],
    answers: list,
) -> dict[str, list[float]]:
    """Forward passes of at most ``max_batch_size``; each request answered with all its predictions.

    A prediction crosses the pipe as plain data, ``(class indices, probabilities,
    original_size, inverted, 28x28 pixels or None)``, the ``top_k`` best first: cheaper to
    pickle and unpickle than objects, on both sides of the pipe.
    """
    stats: dict[str, list[float]] = {"batch_sizes": [], "inference_s": [], "queue_wait_s": []}
    by_job: dict[int, list[tuple[Any, ...]]] = {}
    failed: set[int] = set()
    for start in range(0, len(items), max_batch_size):
        chunk = items[start : start + max_batch_size]
        began = time.perf_counter()
        stats["queue_wait_s"].extend(began - received[position][0] for position, _, _ in chunk)
        try:
            probabilities = predictor.predict(torch.stack([item.tensor for _, _, item in chunk]))
            # One top-k for the whole pass, not a tensor operation per image.
            values, indices = probabilities.topk(len(predictor.classes), dim=1)
            values_list, indices_list = values.tolist(), indices.tolist()
        except Exception as exc:  # every request of this pass fails (a 500, logged by the parent)
            jobs = {received[position][1].job_id for position, _, _ in chunk} - failed
            answers.extend((job_id, ("error", f"{type(exc).__name__}: {exc}")) for job_id in jobs)
            failed |= jobs
            continue
        stats["inference_s"].append(time.perf_counter() - began)
        stats["batch_sizes"].append(len(chunk))
        for (position, _, item), probs, classes in zip(chunk, values_list, indices_list, strict=True):
            request = received[position][1]
            k = min(request.top_k, len(classes))
            pixels = item.image.tobytes() if item.image is not None else None
            answer = (classes[:k], probs[:k], item.original_size, item.inverted, pixels)
            by_job.setdefault(request.job_id, []).append(answer)
    answers.extend((job_id, ("ok", found)) for job_id, found in by_job.items() if job_id not in failed)
    return stats


# ---------------------------------------------------------------------------- the parent


@dataclass(eq=False)
class _Job:
    size: int
    future: asyncio.Future[list[Prediction]]
    sent: bool = False  # written to the child (large uploads are decoded here first)


class ProcessBatcher:
    """The ``Batcher`` interface (classify, classify_many, depth, close) over an inference process."""

    def __init__(
        self,
        classes: Sequence[str],
        metrics: Metrics,
        config: WorkerConfig,
        *,
        max_queue: int = 1024,
        timeout_s: float = 30.0,
        decode: Callable[[bytes, InvertMode, bool], ModelInput] | None = None,
        decode_threads: int = 2,
    ) -> None:
        """``decode`` (the server's ``Predictor.decode``) decodes large uploads here, on
        ``decode_threads`` threads; without it the child decodes every upload."""
        if max_queue < 1 or timeout_s <= 0:
            raise ValueError("max_queue must be at least 1 and timeout_s more than 0")
        self.classes = list(classes)
        self.metrics = metrics
        self.config = config
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._decode = decode
        self._decoder = ThreadPoolExecutor(decode_threads, "decode") if decode is not None else None
        self._ids = itertools.count()
        self._jobs: dict[int, _Job] = {}
        self._admitted = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: Any = None
        self._results: Connection | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._ready: asyncio.Future[int] | None = None
        self._restart_task: asyncio.Future[None] | None = None
        # Loop time since which the child has held work and said nothing; None: it holds none.
        self._silent_since: float | None = None
        self.restarts = 0
        metrics.queue_depth.set_function(lambda: self._admitted)

    @property
    def depth(self) -> int:
        """Images admitted and not yet answered."""
        return self._admitted

    @property
    def ready(self) -> bool:
        """The child has loaded the model and takes requests (false while one restarts)."""
        ready = self._ready
        return ready is not None and ready.done() and not ready.cancelled() and ready.exception() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self, timeout_s: float = 120.0) -> None:
        """Start the inference process and wait until its model is loaded; CheckpointError if it cannot."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            self.close()
            detail = f"the inference process did not load the model within {timeout_s:g} s"
            raise CheckpointError(detail) from None
        except CheckpointError:
            self.close()
            raise

    async def _spawn(self) -> None:
        assert self._loop is not None
        context = _context()
        requests_r, requests_w = context.Pipe(duplex=False)
        results_r, results_w = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main, args=(self.config, requests_r, results_w), name="inference", daemon=True
        )
        process.start()
        # The child holds its ends now; without closing ours, its death would never read as EOF.
        requests_r.close()
        results_w.close()
        pipe = os.fdopen(os.dup(requests_w.fileno()), "wb", buffering=0)
        requests_w.close()
        # An asyncio transport over the write end: a write never blocks the loop.
        self._transport, _ = await self._loop.connect_write_pipe(asyncio.Protocol, pipe)
        self._process, self._results = process, results_r
        self._ready = self._loop.create_future()
        self._ready.add_done_callback(_retrieve)
        self._loop.add_reader(results_r.fileno(), self._on_results)

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

    async def _submit(
        self, payloads: tuple[bytes, ...], invert: InvertMode, keep_image: bool, top_k: int, many: bool
    ) -> list[Prediction]:
        if self._closed or self._loop is None:
            raise RuntimeError("the batcher is closed")
        if self._transport is None:
            raise InferenceUnavailableError("the inference process is restarting; retry")
        size = len(payloads)
        if self._admitted + size > self.max_queue:
            raise queue_full(self._admitted, self.max_queue)
        job_id = next(self._ids)
        job = _Job(size, self._loop.create_future())
        deadline = time.monotonic() + self.timeout_s
        self._admitted += size
        self._jobs[job_id] = job
        # One timer handle, not asyncio.timeout(): cheaper, and this runs for every request.
        timer = self._loop.call_later(self.timeout_s, self._expire, job.future)
        try:
            sent: tuple[bytes | _Decoded, ...] = payloads
            if self._decoder is not None and any(len(data) > LARGE_UPLOAD_BYTES for data in payloads):
                decoding = asyncio.ensure_future(self._decode_here(payloads, invert, keep_image, many))
                await asyncio.wait((decoding, job.future), return_when=asyncio.FIRST_COMPLETED)
                if job.future.done():  # timed out (504), or the server is closing (503), meanwhile
                    decoding.cancel()  # an upload still waiting for a thread is never decoded
                    decoding.add_done_callback(_retrieve)
                    return await job.future
                sent = decoding.result()  # or the upload's ImageError / ItemError
                if self._transport is None:
                    raise InferenceUnavailableError("the inference process is restarting; retry")
            message = _Request(job_id, sent, invert, keep_image, top_k, many, deadline)
            body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            if self._silent_since is None:
                self._silent_since = self._loop.time()
            job.sent = True
            # multiprocessing's framing: a 4-byte big-endian length, then the pickle.
            self._transport.write(struct.pack("!i", len(body)) + body)
            return await job.future
        finally:
            # Answered, failed or timed out: the place is free. A late answer finds no job.
            timer.cancel()
            self._jobs.pop(job_id, None)
            self._admitted -= size

    async def _decode_here(
        self, payloads: tuple[bytes, ...], invert: InvertMode, keep_image: bool, many: bool
    ) -> tuple[_Decoded, ...]:
        """A request with a large upload, decoded on this process's decoding threads, in order:
        all its uploads, so that the first bad one is the one named, as in the child."""
        assert self._decode is not None and self._loop is not None
        prepared: list[_Decoded] = []
        for index, data in enumerate(payloads):
            try:
                item = await self._loop.run_in_executor(self._decoder, self._decode, data, invert, keep_image)
            except ImageError as exc:
                raise (ItemError(index, exc) if many else exc) from None
            prepared.append(_Decoded(item.tensor.numpy().tobytes(), item.original_size, item.inverted))
        return tuple(prepared)

    def _expire(self, future: asyncio.Future[list[Prediction]]) -> None:
        expire(future, self.timeout_s)
        self._kill_if_stalled()

    def _kill_if_stalled(self) -> None:
        """A request timed out: if the child has held work for two timeouts in silence, it hangs; kill it.

        Its pipe then closes, and ``_child_exited`` fails what it held (503) and starts another.
        """
        process, loop = self._process, self._loop
        if self._closed or process is None or loop is None or not self.ready:
            return
        if self._silent_since is None or not process.is_alive():
            return
        silent = loop.time() - self._silent_since
        if silent < max(2 * self.timeout_s, MIN_STALL_S):
            return
        logger.error(
            "the inference process %s has answered nothing for %.0f s, holding %d image(s); killing it",
            process.pid,
            silent,
            self._admitted,
        )
        process.kill()

    def _on_results(self) -> None:
        """The result pipe is readable: settle every answered job (on the event loop)."""
        results = self._results
        assert results is not None
        try:
            while results.poll(0):
                self._handle(results.recv())
        except (EOFError, OSError):
            self._child_exited()
            return
        # The child spoke: what it still holds for someone waiting counts its silence from now.
        waiting = any(job.sent and not job.future.done() for job in self._jobs.values())
        self._silent_since = self._loop.time() if waiting and self._loop is not None else None

    def _handle(self, message: Any) -> None:
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str):
            kind, detail = message
            assert self._ready is not None
            if kind == "ready" and not self._ready.done():
                self._ready.set_result(detail)
                logger.info("inference process %s ready", detail)
            elif kind == "failed":
                logger.error("the inference process could not load the model: %s", detail)
                if not self._ready.done():
                    self._ready.set_exception(CheckpointError(detail))
            return
        answers, stats = message
        self._record(stats)
        for job_id, outcome in answers:
            job = self._jobs.get(job_id)
            if job is None or job.future.done():
                continue  # timed out meanwhile
            kind = outcome[0]
            if kind == "ok":
                job.future.set_result([self._prediction(*found) for found in outcome[1]])
            elif kind == "image_error":
                _, index, error = outcome
                job.future.set_exception(error if index is None else ItemError(index, error))
            else:
                job.future.set_exception(RuntimeError(f"inference failed: {outcome[1]}"))

    def _prediction(
        self,
        indices: list[int],
        probabilities: list[float],
        original_size: tuple[int, int],
        inverted: bool,
        pixels: bytes | None,
    ) -> Prediction:
        names = self.classes
        top = [ScoredClass(i, names[i], p) for i, p in zip(indices, probabilities, strict=True)]
        return Prediction(top, original_size, inverted, _picture(pixels) if pixels is not None else None)

    def _record(self, stats: dict[str, list[float]]) -> None:
        for wait in stats["queue_wait_s"]:
            self.metrics.queue_wait.observe(wait)
        for size, seconds in zip(stats["batch_sizes"], stats["inference_s"], strict=True):
            self.metrics.batch_size.observe(size)
            self.metrics.inference_time.observe(seconds)

    def _child_exited(self) -> None:
        """The child is gone: fail what it held, and start another unless we are closing."""
        self._detach()
        code = self._process.exitcode if self._process is not None else None
        # Only what it was sent: a request still decoding here goes to the next child.
        pending = [job for job in self._jobs.values() if job.sent and not job.future.done()]
        for job in pending:
            job.future.set_exception(InferenceUnavailableError("the inference process stopped; retry"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(CheckpointError(f"the inference process exited ({code}) while loading"))
        self._ready = None  # not ready until the next child says so: /health answers 503 meanwhile
        self._silent_since = None
        if self._closed or self._loop is None:
            return
        self.restarts += 1
        logger.error(
            "the inference process exited (code %s) holding %d request(s); starting another in %g s",
            code,
            len(pending),
            RESTART_DELAY_S,
        )
        self._loop.call_later(RESTART_DELAY_S, self._begin_restart)

    def _begin_restart(self) -> None:
        # Held: the loop keeps only a weak reference to a task.
        self._restart_task = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        if self._closed:
            return
        try:
            await self._spawn()
        except Exception:  # no process could be started (no memory, no forkserver): try again later
            logger.exception("cannot start an inference process; retrying in %g s", RESTART_DELAY_S)
            self._detach()
            assert self._loop is not None
            self._loop.call_later(RESTART_DELAY_S, self._begin_restart)

    def _detach(self) -> None:
        if self._results is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._results.fileno())
            self._results.close()
            self._results = None
        if self._transport is not None:
            if not self._transport.is_closing():
                self._transport.abort()
            self._transport = None

    async def aclose(self, timeout: float = 10.0) -> None:
        """Let the child answer what it holds and exit (killed after ``timeout``); fail the rest."""
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            body = pickle.dumps(STOP)
            transport.write(struct.pack("!i", len(body)) + body)
            transport.close()  # after what is buffered has been written
        self._transport = None
        process = self._process
        if process is not None:
            # Off the loop, which meanwhile goes on settling the answers the child sends.
            await asyncio.to_thread(process.join, timeout)
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop now: kill the child if it still runs; every request not answered fails (503)."""
        self._closed = True
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)
        process = self._process
        if process is not None and process.is_alive():
            process.kill()
            process.join(timeout)
        if self._results is not None:
            with contextlib.suppress(EOFError, OSError):
                while self._results.poll(0):
                    self._handle(self._results.recv())
        self._detach()
        for job in self._jobs.values():
            if not job.future.done():
                job.future.set_exception(InferenceUnavailableError("the server is shutting down"))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: a failed start is reported through ``start``."""
    if not future.cancelled():
        future.exception()


def _context() -> Any:
    """forkserver where the platform has it (a clean process with the model code imported),
    else spawn. Never fork: this process runs threads (torch's, uvicorn's)."""
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["app.inference_process"])
        return context
    return mp.get_context("spawn")
