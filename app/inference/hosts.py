"""Where the inference worker runs: a child process (the default) or a thread."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from app.inference.framing import socket_pair
from app.inference.messages import WorkerConfig

if TYPE_CHECKING:
    from app.inference.worker import Worker

T = TypeVar("T")


def mp_context() -> Any:
    """forkserver where the platform has it (a clean process with the decoders' code
    imported), else spawn. Never fork: the server runs threads (uvicorn's, the decoders' readers).

    The forkserver holds no torch: the decoders, forked from it, share what it imported, and
    only the worker, the one process that runs the model, imports torch.
    """
    if "forkserver" in mp.get_all_start_methods():
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(["app.inference.decoders"])
        return context
    return mp.get_context("spawn")


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a spawned process that exits when it returns: what it imports
    (torch) and loads is gone with it. Its exception is raised here."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def run_worker_process(config: WorkerConfig, sock: socket.socket) -> None:
    """A worker process's first step: import the model code (and torch) there, then serve."""
    from app.inference.worker import run_in_process

    run_in_process(config, sock)


class ProcessHost:
    """A worker in a child process: a (re)start costs a fork and a model load."""

    watched = True

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._process: Any = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> socket.socket:
        ours, theirs = socket_pair()
        process = mp_context().Process(
            target=run_worker_process, args=(self.config, theirs), name="inference", daemon=True
        )
        process.start()
        theirs.close()  # the child holds its end now; without closing ours, its death would never read as EOF
        self._process = process
        return ours

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def join(self, timeout: float) -> None:
        if self._process is not None:
            self._process.join(timeout)


class ThreadHost:
    """A worker in a thread of the server process. A thread cannot be killed, so a silent one
    is not replaced: this host is for tests, which hold a forward pass on purpose, and for
    debugging."""

    watched = False

    def __init__(self, worker_factory: Any) -> None:
        self.worker_factory = worker_factory
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None

    def start(self) -> socket.socket:
        from app.inference.worker import run_in_thread

        ours, theirs = socket_pair()
        worker: Worker = self.worker_factory()
        self._thread = threading.Thread(
            target=run_in_thread, args=(worker, theirs), name="inference", daemon=True
        )
        self._socket = theirs
        self._thread.start()
        return ours

    def kill(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
