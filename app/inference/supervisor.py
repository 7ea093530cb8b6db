"""Keeps one inference worker running: starts it, hears from it, replaces it when it dies,
hangs or freezes.

    starting ──ready──> ready ──died, or silent for HANG_AFTER_S──> restarting ──ready──> ready
                                                        aclose() from any state ──> stopped

The worker sends something at least every ``messages.HEARTBEAT_S``; the supervisor checks
on its own timer, so a frozen worker is found whether or not any request is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import pickle
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from app.card import ModelCard
from app.inference.framing import FrameProtocol
from app.inference.messages import HEARTBEAT_S, FromWorker, Heartbeat, LoadFailed, Ready, Stop, ToWorker
from app.inference.protocol import RESTARTING, InferenceUnavailableError
from models.errors import CheckpointError

logger = logging.getLogger(__name__)

# Six heartbeats missed: a worker this silent is hung or frozen (its forward passes take
# milliseconds, and it answers after each).
HANG_AFTER_S = 3.0
RESTART_DELAY_S = 1.0  # between a worker's loss and the next start: no hot loop on a broken model


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class WorkerHost(Protocol):
    """Where a worker runs: a child process or a thread, on the far end of a socket pair."""

    # Whether a silent worker is taken for hung and replaced: a process can be killed; a
    # thread cannot, and tests hold one on purpose.
    watched: bool

    @property
    def pid(self) -> int | None: ...

    def start(self) -> socket.socket:
        """Start a worker; the server's end of its socket pair."""
        ...

    def kill(self) -> None: ...

    def join(self, timeout: float) -> None: ...


class Supervisor:
    """One worker's life; ``on_messages`` gets what it answers, ``on_lost`` is called when it is gone."""

    def __init__(
        self,
        host: WorkerHost,
        on_messages: Callable[[Sequence[FromWorker]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.host = host
        self.on_messages = on_messages
        self.on_lost = on_lost
        self.state = State.STARTING
        self.restarts = 0
        self.card: ModelCard | None = None  # the model the worker loaded, once it is ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: FrameProtocol | None = None
        self._ready: asyncio.Future[None] | None = None
        self._heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._restart_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.host.pid

    @property
    def unsent_bytes(self) -> int:
        """What the event loop holds for the worker that the socket has not taken yet."""
        return self._link.unsent_bytes if self._link is not None else 0

    async def start(self, timeout_s: float = 120.0) -> None:
        """Start the worker and wait until its model is loaded; CheckpointError if it cannot."""
        self._loop = asyncio.get_running_loop()
        await self._launch()
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout_s)
        except TimeoutError:
            await self.aclose(0)
            raise CheckpointError(
                f"the inference process did not load the model within {timeout_s:g} s"
            ) from None
        except CheckpointError:
            await self.aclose(0)
            raise
        self._timer = self._loop.call_later(HEARTBEAT_S, self._check)

    def send(self, messages: list[ToWorker]) -> None:
        """Write to the worker without blocking; InferenceUnavailableError unless it is ready."""
        if self.state is not State.READY or self._link is None:
            raise InferenceUnavailableError(RESTARTING)
        self._link.send(pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL))

    async def _launch(self) -> None:
        assert self._loop is not None
        # Before the worker starts: a worker quick to load (a thread handed a loaded model) can
        # say Ready while the connection is still being made.
        self._ready = self._loop.create_future()
        self._ready.add_done_callback(_retrieve)
        sock = self.host.start()
        _, link = await self._loop.create_unix_connection(lambda: FrameProtocol(self._on_frame), sock=sock)
        self._link = link
        self._heard = self._loop.time()
        # Only this worker's end may report this worker lost, not an earlier one's closing late.
        link.closed.add_done_callback(lambda _: self._lost() if self._link is link else None)

    def _on_frame(self, payload: bytes) -> None:
        assert self._loop is not None
        messages: list[FromWorker] = pickle.loads(payload)
        self._heard = self._loop.time()
        answers = [m for m in messages if not isinstance(m, Heartbeat | Ready | LoadFailed)]
        for message in messages:
            if isinstance(message, Ready):
                self._on_ready(message)
            elif isinstance(message, LoadFailed):
                logger.error("the inference process could not load the model: %s", message.reason)
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(CheckpointError(message.reason))
        if answers:
            self.on_messages(answers)

    def _on_ready(self, ready: Ready) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.READY
        self.card = ready.card
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        logger.info("inference process %s ready (runtime %s)", ready.pid, ready.card.runtime)

    def _check(self) -> None:
        """The heartbeat timer: a ready worker silent for ``HANG_AFTER_S`` is killed (and replaced)."""
        assert self._loop is not None
        if self.state is State.STOPPED:
            return
        silent = self._loop.time() - self._heard
        if self.state is State.READY and self.host.watched and silent > HANG_AFTER_S:
            logger.error("the inference process %s has said nothing for %.1f s; killing it", self.pid, silent)
            self.state = State.RESTARTING  # /health answers 503 from now, not once the socket closes
            self.host.kill()
        self._timer = self._loop.call_later(HEARTBEAT_S, self._check)

    def _lost(self) -> None:
        """The worker is gone: fail what it held, and start another unless we are stopping."""
        self._detach()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(CheckpointError("the inference process exited while loading the model"))
        if self.state is State.STOPPED or self._loop is None:
            return
        self.state = State.RESTARTING
        self.restarts += 1
        logger.error("the inference process %s is gone; starting another in %g s", self.pid, RESTART_DELAY_S)
        self.on_lost()
        self._loop.call_later(RESTART_DELAY_S, self._begin_restart)

    def _begin_restart(self) -> None:
        # Held: the loop keeps only a weak reference to a task.
        self._restart_task = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        if self.state is State.STOPPED:
            return
        try:
            await self._launch()
        except Exception:  # no process could be started (no memory, no forkserver): try again later
            logger.exception("cannot start an inference process; retrying in %g s", RESTART_DELAY_S)
            self._detach()
            assert self._loop is not None
            self._loop.call_later(RESTART_DELAY_S, self._begin_restart)

    def _detach(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    async def aclose(self, timeout: float = 10.0) -> None:
        """Tell the worker to answer what it holds and exit; kill it after ``timeout``."""
        was_ready = self.state is State.READY
        self.state = State.STOPPED
        if self._timer is not None:
            self._timer.cancel()
        link = self._link
        if was_ready and link is not None:
            link.send(pickle.dumps([Stop()]))
            # The loop goes on settling the answers the worker sends until it closes its end.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), timeout)
        self.host.kill()
        await asyncio.to_thread(self.host.join, 10.0)
        self._detach()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen: a failed start is reported through ``start``."""
    if not future.cancelled():
        future.exception()
