"""Decoders: processes that turn untrusted uploads into 28x28 pixels, each under a memory
budget (its address space is limited) and a CPU-time budget per image (a profiling timer
ends the process when the image has used it up), so no upload can hold the service's
memory or burn its CPU. A decoder that is ended is replaced; its upload gets a 400.

Requests queue for the decoders one upload at a time: a request of many uploads sends the
next only once the previous is decoded, so every request waiting gets its turn in between.
A decoder's answer is a fixed binary layout, never a pickle: it is as untrusted as the
bytes it decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app import request_context
from app.inference.framing import Channel, FrameError, frame, read_frame, socket_pair
from app.inference.messages import Decoded
from app.logs import LogFormat, configure_logging
from app.prediction import ItemError
from models.images import (
    INPUT_SIZE,
    INVERT_MODES,
    TOO_MUCH_MEMORY,
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooCostlyError,
    ImageTooLargeError,
    InvertMode,
    NotAnImageError,
    Steps,
    UnsupportedImageError,
    decode_upload,
)

logger = logging.getLogger(__name__)

_ERRORS: tuple[type[ImageError], ...] = (
    ImageError,
    EmptyImageError,
    NotAnImageError,
    UnsupportedImageError,
    CorruptImageError,
    ImageTooLargeError,
    ImageTooCostlyError,
)
# 0, width, height, inverted, background (-1: none), box (left, top, right, bottom; -1s: none), pixels
_DECODED = struct.Struct(f"!BIIBh4i{INPUT_SIZE * INPUT_SIZE}s")
_NO_BOX = (-1, -1, -1, -1)
_MAX_DETAIL = 200
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass(frozen=True)
class DecoderLimits:
    cpu_s: float  # CPU time one image may take
    memory_bytes: int  # how far a decoder's address space may grow beyond its size at start
    max_pixels: int
    log_level: str = "info"  # the server's: a refused upload's cause is logged here
    log_format: LogFormat = "text"


# ---------------------------------------------------------------------------- the decoder process


def run_decoder(sock: socket.socket, limits: DecoderLimits) -> None:
    """A decoder process: decode one upload per frame, answer, until the server closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the CPU budget: the default action ends the process
    configure_logging(limits.log_level, limits.log_format)
    gc.freeze()  # what the process started with: collections after a failure skip it
    _limit_address_space(limits.memory_bytes)
    libc = _glibc()
    if libc is not None:
        # Every allocation of 128 KiB or more (a picture's pixels) gets pages of its own, given
        # back when freed; glibc's default would keep them for reuse after the first.
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    channel = Channel(sock)
    with contextlib.suppress(EOFError, OSError):
        while (payload := channel.receive(None)) is not None:
            signal.setitimer(signal.ITIMER_PROF, limits.cpu_s)
            answer = _decode(payload[1:], INVERT_MODES[payload[0] % len(INVERT_MODES)], limits.max_pixels)
            signal.setitimer(signal.ITIMER_PROF, 0)
            channel.send(answer)
            if answer[0] != 0:  # a failed decode keeps nothing: no cycle, not even free heap
                gc.collect()
                if libc is not None:
                    libc.malloc_trim(0)


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc has both; musl and others may not)
    except (OSError, AttributeError):
        return None
    return libc


def _limit_address_space(budget: int) -> None:
    try:
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the CPU budget still holds
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )


def _decode(data: bytes, invert: InvertMode, max_pixels: int) -> bytes:
    try:
        image, steps = decode_upload(data, invert, max_pixels)
        width, height = steps.original_size
        level = -1 if steps.background is None else steps.background
        box = steps.box or _NO_BOX
        return _DECODED.pack(0, width, height, steps.inverted, level, *box, image.tobytes())
    except ImageError as exc:
        # Its traceback holds the frames that held the pixels, in a cycle: drop it now.
        exc.__traceback__ = None
        error: ImageError = exc
    except MemoryError:
        error = ImageTooCostlyError(TOO_MUCH_MEMORY)
    except Exception:  # a decoder bug is still this upload's failure, and this process goes on
        error = CorruptImageError("the file is not a decodable image")
    kind = next(i for i, cls in reversed(list(enumerate(_ERRORS))) if isinstance(error, cls))
    return bytes([kind]) + str(error)[:_MAX_DETAIL].encode()


def _parse(answer: bytes) -> Decoded:
    """A decoder's answer as pixels, or the ImageError it reports; raises FrameError if malformed."""
    if answer[:1] == b"\x00" and len(answer) == _DECODED.size:
        _, width, height, inverted, level, *box, pixels = _DECODED.unpack(answer)
        background = None if level < 0 else level
        found = None if box[0] < 0 else (box[0], box[1], box[2], box[3])
        return Decoded(pixels, Steps((width, height), bool(inverted), background, found))
    if answer and 0 < answer[0] < len(_ERRORS):
        detail = answer[1 : 1 + _MAX_DETAIL].decode("ascii", "replace")
        raise _ERRORS[answer[0]]("".join(ch if ch.isprintable() else "?" for ch in detail))
    raise FrameError("a malformed answer from a decoder")


# ---------------------------------------------------------------------------- the server side


@dataclass(eq=False)
class _Work:
    data: bytes
    invert: InvertMode
    future: asyncio.Future[Decoded]
    request_id: str | None  # for a log line about it, written from the decoder's own task


class DecoderPool:
    """``processes`` decoders, fed from one queue; started with ``start``, stopped with ``aclose``."""

    def __init__(
        self,
        processes: int,
        limits: DecoderLimits,
        context: Any,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.limits = limits
        self.context = context
        self.observe = observe  # given each upload's decoding time, in seconds
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._slots = [_Slot(self) for _ in range(processes)]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot.process is not None]

    async def start(self) -> None:
        for slot in self._slots:
            await slot.spawn()
            self._tasks.append(asyncio.ensure_future(slot.serve()))

    async def decode(self, data: bytes, invert: InvertMode) -> Decoded:
        """One upload's pixels; raises its ImageError. Cancelled, it is never decoded if not begun."""
        future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Work(data, invert, future, request_context.current_id()))
        return await future

    async def decode_all(
        self, payloads: Sequence[bytes], invert: InvertMode, many: bool
    ) -> tuple[Decoded, ...]:
        """Uploads in order, one at a time; the first bad one raises (as ItemError when ``many``)."""
        decoded = []
        for index, data in enumerate(payloads):
            try:
                decoded.append(await self.decode(data, invert))
            except ImageError as exc:
                raise (ItemError(index, exc) if many else exc) from None
        return tuple(decoded)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for slot in self._slots:
            await slot.stop()
        while not self._queue.empty():
            work = self._queue.get_nowait()
            if not work.future.done():
                work.future.cancel()


class _Slot:
    """One decoder process, replaced whenever it ends."""

    def __init__(self, pool: DecoderPool) -> None:
        self.pool = pool
        self.process: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def spawn(self) -> None:
        ours, theirs = socket_pair()
        process = self.pool.context.Process(
            target=run_decoder, args=(theirs, self.pool.limits), name="decoder", daemon=True
        )
        process.start()
        theirs.close()
        self.process = process
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)

    async def serve(self) -> None:
        while True:
            work = await self.pool._queue.get()
            if work.future.done():  # its request gave up while it waited
                continue
            try:
                if self._writer is None:
                    await self.spawn()
                assert self._reader is not None and self._writer is not None
                began = time.perf_counter()
                self._writer.write(frame(bytes([INVERT_MODES.index(work.invert)]) + work.data))
                answer = await read_frame(self._reader)
                if self.pool.observe is not None:
                    self.pool.observe(time.perf_counter() - began)
            except (asyncio.IncompleteReadError, ConnectionError, FrameError, OSError):
                error = await self._ended(work)
                if not work.future.done():
                    work.future.set_exception(error)
                continue
            if work.future.done():
                continue
            try:
                work.future.set_result(_parse(answer))
            except ImageError as exc:
                work.future.set_exception(exc)
            except FrameError:
                work.future.set_exception(CorruptImageError("the file is not a decodable image"))
                await self._ended(work)

    async def _ended(self, work: _Work) -> ImageError:
        """The decoder ended mid-upload (its CPU budget, a crash): the upload's error; a new one next time."""
        process = self.process
        await self.stop()
        code = process.exitcode if process is not None else None
        logger.warning(
            "decoder %s ended (exit code %s) decoding an upload of %d bytes",
            process.pid,
            code,
            len(work.data),
            extra={"request_id": work.request_id},
        )
        if code == -signal.SIGPROF:
            cpu = self.pool.limits.cpu_s
            return ImageTooCostlyError(f"the image is too costly to decode: more than {cpu:g} s of CPU")
        return ImageTooCostlyError("the image is too costly to decode: its decoder was stopped")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        process, self.process = self.process, None
        if process is not None:
            if process.is_alive():
                process.kill()
            await asyncio.to_thread(process.join, 10.0)
