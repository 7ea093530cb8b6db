"""The supervisor's start: a worker's Ready is heard however early it comes, on the event
loop the server runs (uvloop), which reads a new connection at once."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from pathlib import Path

import uvloop

from app.card import ModelCard
from app.inference.framing import frame, socket_pair
from app.inference.messages import Ready
from app.inference.supervisor import State, Supervisor
from app.predictor import Predictor


class InstantHost:
    """A worker that has said Ready before its socket is even handed to the supervisor:
    a thread given a model loaded beforehand can be that quick."""

    watched = False
    pid = None

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.theirs: socket.socket | None = None

    def start(self) -> socket.socket:
        ours, self.theirs = socket_pair()
        self.theirs.sendall(frame(pickle.dumps([Ready(os.getpid(), self.card)])))
        return ours

    def kill(self) -> None:
        if self.theirs is not None:
            self.theirs.close()

    def join(self, timeout: float) -> None:
        pass


def test_a_worker_ready_before_the_connection_is_made_starts(tiny_checkpoint: Path) -> None:
    card = Predictor.load(tiny_checkpoint, device="cpu").card()

    async def start() -> tuple[State, ModelCard | None]:
        supervisor = Supervisor(InstantHost(card), on_messages=lambda _: None, on_lost=lambda: None)
        try:
            await supervisor.start(timeout_s=5.0)
            return supervisor.state, supervisor.card
        finally:
            await supervisor.aclose(0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        state, heard = runner.run(start())
    assert state is State.READY
    assert heard == card
