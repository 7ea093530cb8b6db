"""The inference worker: decode -> batch -> predict -> unbatch, for tasks arriving on a channel.

The same code runs in a child process (the default: decoding and inference get a GIL and
a core of their own, away from the event loop) or in a thread of the server process
(``FASHION_INFERENCE_PROCESS=false``, and tests that hold a forward pass).

Only small uploads are decoded here (``INLINE_MAX_BYTES``, and a header within
``INLINE_MAX_PIXELS``): their cost is bounded by their size, a fraction of a millisecond.
Anything bigger is bounced to the contained decoders (``app.inference.decoders``) and comes
back as 28x28 pixels.

The worker batches numpy arrays and runs a ``ServedModel`` (app.inference.served_model).
A worker process serving ONNX Runtime loads the graph the server had exported and never
imports torch; one serving torch loads the checkpoint itself.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.inference.batching import collate
from app.inference.framing import Channel
from app.inference.messages import (
    HEARTBEAT_S,
    Answered,
    Bounced,
    Decoded,
    Failed,
    Found,
    FromWorker,
    Heartbeat,
    LoadFailed,
    NotFinite,
    PassStats,
    Ready,
    Refused,
    Stop,
    Task,
    Timings,
    WorkerConfig,
)
from app.inference.served_model import ExportedModel, ServedModel, unit_pixels
from app.logs import configure_logging
from models.images import DEFAULT_MAX_PIXELS, INPUT_SIZE, ImageError, Steps, decode_upload

logger = logging.getLogger(__name__)

# Beside INLINE_MAX_BYTES, what an upload decoded here may be; see the module docstring.
INLINE_MAX_PIXELS = 128 * 128
INLINE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


class _NotInline(Exception):
    """An upload too big to decode in the worker."""


def _check_inline(image: Image.Image) -> None:
    if image.format not in INLINE_FORMATS or image.width * image.height > INLINE_MAX_PIXELS:
        raise _NotInline


@dataclass(slots=True)
class _Item:
    """One image of a task, waiting for a forward pass."""

    task: Task
    index: int
    pixels: np.ndarray  # 1x28x28 uint8, or float32 in 0-1
    steps: Steps
    picture: bytes | None
    queued_at: float


@dataclass(slots=True)
class _Open:
    """A task with images still to compute."""

    task: Task
    found: list[Found | None] = field(default_factory=list)
    remaining: int = 0
    timings: Timings | None = None  # when the task is traced


class Worker:
    """Serves tasks from a channel until told to stop or the channel closes."""

    def __init__(
        self,
        model: ServedModel,
        max_batch_size: int,
        max_wait_s: float,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        spin_s: float = 0.0,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or spin_s < 0:
            raise ValueError("max_batch_size must be at least 1, max_wait_s and spin_s at least 0")
        self.model = model
        ood = model.card.ood
        self.ood_threshold = None if ood is None else ood.threshold
        self.max_image_pixels = max_image_pixels
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.spin_s = spin_s
        self.spins = 0  # idle waits that the polling ended with a task, not the sleep
        self._pending: deque[_Item] = deque()
        self._open: dict[int, _Open] = {}
        self._out: list[FromWorker] = []
        self._decoded: list[float] = []  # seconds each upload took to decode, for the metrics
        self._stopping = False

    @classmethod
    def from_config(cls, model: ServedModel, config: WorkerConfig) -> Worker:
        """A worker serving ``model`` with the batching, limits and polling ``config`` says."""
        return cls(model, config.max_batch_size, config.max_wait_s, config.max_image_pixels, config.spin_s)

    def serve(self, channel: Channel) -> None:
        last_sent = time.monotonic()
        answered = False  # whether the last turn computed something: an idle worker never polls
        with contextlib.suppress(EOFError, OSError):
            while not (self._stopping and not self._pending):
                if not self._pending:
                    self._await_task(channel, poll=answered)
                batch = collate(
                    self._pending, lambda: self._receive(channel, 0), self.max_batch_size, self.max_wait_s
                )
                self._predict(batch)
                answered = bool(batch)
                now = time.monotonic()
                if self._decoded:
                    self._out.append(PassStats([], [], [], self._decoded))
                    self._decoded = []
                # Silence is how the supervisor tells a hung worker: never be silent for long.
                if not self._out and now - last_sent >= HEARTBEAT_S:
                    self._out.append(Heartbeat())
                if self._out:
                    channel.send(pickle.dumps(self._out, protocol=pickle.HIGHEST_PROTOCOL))
                    self._out, last_sent = [], now

    def _await_task(self, channel: Channel, poll: bool) -> None:
        """Wait for the next task: polling for ``spin_s`` first (after an answer), then asleep.

        A process asleep in poll takes a wake-up and cold caches to answer the next request;
        one still polling answers it at once. Each poll yields the core, so the event loop
        and the decoders lose nothing to it when they have work.
        """
        if poll and self.spin_s:
            until = time.monotonic() + self.spin_s
            while time.monotonic() < until and not self._stopping:
                if self._receive(channel, 0):
                    self.spins += 1
                    return
                os.sched_yield()
        self._receive(channel, HEARTBEAT_S)

    def _receive(self, channel: Channel, timeout: float) -> bool:
        """Decode the tasks of one frame, if one comes within ``timeout``, into pending images."""
        if self._stopping:
            return False
        payload = channel.receive(timeout)
        if payload is None:
            return False
        for message in pickle.loads(payload):
            if isinstance(message, Stop):
                self._stopping = True
            elif time.monotonic() < message.deadline:  # else the server has answered 504 already
                self._decode(message)
        return True

    # ------------------------------------------------------------------ the steps

    def _decode(self, task: Task) -> None:
        """decode: every upload of the task to pixels, or one refusal for the whole task."""
        items = []
        timings = Timings(decode_start=time.time_ns()) if task.traced else None
        for index, upload in enumerate(task.uploads):
            try:
                began = time.perf_counter()
                item = self._item(task, index, upload)
                # Queued from here: the wait for a forward pass, not the decoding before it.
                item.queued_at = time.perf_counter()
                if not isinstance(upload, Decoded):
                    self._decoded.append(item.queued_at - began)
                items.append(item)
            except _NotInline:
                self._out.append(Bounced(task.job_id))
                return
            except ImageError as exc:
                exc.__traceback__ = None  # it held the frames that held the pixels, in a cycle
                self._out.append(Refused(task.job_id, index, exc))
                return
            except Exception as exc:  # a decoder bug: this request fails (a 500), the worker goes on
                self._out.append(Failed(task.job_id, f"{type(exc).__name__}: {exc}"))
                return
        if timings is not None:
            timings.decode_end = timings.queued = time.time_ns()
            if all(isinstance(upload, Decoded) for upload in task.uploads):
                timings.decode_start = timings.decode_end = 0  # nothing was decoded here
        self._open[task.job_id] = _Open(task, [None] * len(items), len(items), timings)
        self._pending.extend(items)

    @staticmethod
    def _stack(pixels: list[np.ndarray]) -> np.ndarray:
        """One batch: uint8 pixels as they are; with any 0-1 floats a client sent, all in 0-1."""
        if all(p.dtype == np.uint8 for p in pixels):
            return np.stack(pixels)
        return np.stack([unit_pixels(p) for p in pixels])

    def _item(self, task: Task, index: int, upload: bytes | Decoded) -> _Item:
        """One upload, decoded here unless it comes decoded, as an image waiting for its pass."""
        if isinstance(upload, Decoded):
            floating = upload.dtype == "float32"
            pixels = np.frombuffer(upload.pixels, dtype="<f4" if floating else np.uint8)
            kept = None if floating or not task.keep_image else upload.pixels
            steps = upload.steps
        else:
            image, steps = decode_upload(upload, task.invert, self.max_image_pixels, _check_inline)
            pixels = np.asarray(image, dtype=np.uint8)
            kept = image.tobytes() if task.keep_image else None
        return _Item(task, index, pixels.reshape(1, INPUT_SIZE, INPUT_SIZE), steps, kept, 0.0)

    def _predict(self, batch: list[_Item]) -> None:
        """predict and unbatch: one forward pass; each finished task answered with all its images."""
        now = time.monotonic()
        live = []
        for item in batch:
            if now >= item.task.deadline:  # answered 504 meanwhile: what is left of it is dropped
                self._open.pop(item.task.job_id, None)
            elif item.task.job_id in self._open:
                live.append(item)
        batch = live
        if not batch:
            return
        began, began_ns = time.perf_counter(), time.time_ns()
        try:
            probabilities, scores = self.model.predict(self._stack([item.pixels for item in batch]))
            # One ranking for the whole pass, not an operation per image.
            indices = np.argsort(-probabilities, axis=1, kind="stable")
            values = np.take_along_axis(probabilities, indices, axis=1)
            values_list, indices_list = values.tolist(), indices.tolist()
            finite_rows = np.isfinite(probabilities).all(axis=1)
            if scores is not None:
                finite_rows &= np.isfinite(scores)
            finite = finite_rows.tolist()
            scores_list: list[float | None] = [None] * len(batch) if scores is None else scores.tolist()
        except Exception as exc:
            for job_id in {item.task.job_id for item in batch}:
                self._open.pop(job_id, None)
                self._out.append(Failed(job_id, f"{type(exc).__name__}: {exc}"))
            return
        elapsed, ended_ns = time.perf_counter() - began, time.time_ns()
        self._out.append(PassStats([len(batch)], [elapsed], [began - item.queued_at for item in batch]))
        for item, probs, classes, ok, score in zip(
            batch, values_list, indices_list, finite, scores_list, strict=True
        ):
            job = self._open.get(item.task.job_id)
            if job is None:
                continue
            if job.timings is not None:
                if not job.timings.pass_start:
                    job.timings.pass_start = began_ns
                job.timings.pass_end, job.timings.batch_size = ended_ns, len(batch)
            if not ok:
                logger.warning(
                    "the model's output for image %d of a request is not finite",
                    item.index,
                    extra={"request_id": item.task.request_id},
                )
                del self._open[item.task.job_id]
                self._out.append(NotFinite(item.task.job_id, item.index))
                continue
            k = min(item.task.top_k, len(classes))
            flagged = None if score is None or self.ood_threshold is None else score > self.ood_threshold
            job.found[item.index] = Found(classes[:k], probs[:k], item.steps, item.picture, score, flagged)
            job.remaining -= 1
            if job.remaining == 0:
                del self._open[item.task.job_id]
                found = [f for f in job.found if f is not None]
                self._out.append(Answered(item.task.job_id, found, job.timings))


def run_in_thread(worker: Worker, sock: socket.socket) -> None:
    """A worker in a thread of the server process, on its end of a socket pair."""
    channel = Channel(sock)
    with contextlib.suppress(OSError):
        channel.send(pickle.dumps([Ready(os.getpid(), worker.model.card)]))
        worker.serve(channel)
    channel.close()


def load_model(config: WorkerConfig) -> ServedModel:
    """The graph the server exported, in the runtime it chose; else the checkpoint, loaded with torch."""
    if config.exported is not None:
        return ExportedModel(config.exported, config.torch_threads)
    import torch  # only a worker that serves with torch imports it

    from app.predictor import Predictor, PredictorModel

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    predictor = Predictor.from_config(config)
    if config.version is not None and predictor.version != config.version:
        raise RuntimeError(f"{config.model_path} changed since start-up (now {predictor.version})")
    return PredictorModel(predictor)


def run_in_process(config: WorkerConfig, sock: socket.socket) -> None:
    """A worker process: load the model, say ready, then serve until told to stop."""
    # Only the server's Stop (or its death: the socket closes) ends this process, so a
    # Ctrl-C or a SIGTERM sent to the whole process group lets the server drain first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(config.log_level, config.log_format)
    channel = Channel(sock)
    try:
        model = load_model(config)
    except Exception as exc:  # reported to the server, which logs it
        channel.send(pickle.dumps([LoadFailed(f"{type(exc).__name__}: {exc}")]))
        return
    gc.collect()
    gc.freeze()
    channel.send(pickle.dumps([Ready(os.getpid(), model.card)]))
    Worker.from_config(model, config).serve(channel)
