"""The worker between tasks: after an answer it polls for the next task for ``spin_s``, then
sleeps; a Stop ends it either way."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from app.inference.framing import Channel, socket_pair
from app.inference.messages import Answered, Stop, Task
from app.inference.worker import Worker
from app.predictor import Predictor, PredictorModel
from tests.app.images import png_bytes

SAFETY_S = 30.0  # only a hung worker reaches it


def ask(channel: Channel, job_id: int) -> Answered:
    """Send one upload as a task and wait for its answer."""
    task = Task(job_id, (png_bytes(),), "auto", False, 3, time.monotonic() + SAFETY_S)
    channel.send(pickle.dumps([task]))
    while True:
        payload = channel.receive(SAFETY_S)
        assert payload is not None, "the worker did not answer"
        answered = [m for m in pickle.loads(payload) if isinstance(m, Answered)]
        if answered:
            return answered[0]


@pytest.mark.parametrize("spin_s", [0.0, SAFETY_S])
def test_a_task_coming_while_the_worker_polls_is_taken_there(tiny_checkpoint: Path, spin_s: float) -> None:
    worker = Worker(PredictorModel(Predictor.load(tiny_checkpoint, device="cpu")), 32, 0.002, spin_s=spin_s)
    ours, theirs = socket_pair()
    thread = threading.Thread(target=worker.serve, args=(Channel(theirs),), daemon=True)
    thread.start()
    channel = Channel(ours)
    try:
        first, second = ask(channel, 1), ask(channel, 2)
        assert (first.job_id, second.job_id) == (1, 2)
        # Polling for 30 s after its first answer, the worker was awake when the second task
        # came; at 0 it slept. It never polls before it has answered anything.
        assert worker.spins == (1 if spin_s else 0)
        channel.send(pickle.dumps([Stop()]))
        thread.join(SAFETY_S)
        assert not thread.is_alive(), "a Stop did not end the worker"
    finally:
        channel.close()


def test_a_negative_spin_is_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="spin_s"):
        Worker(PredictorModel(Predictor.load(tiny_checkpoint, device="cpu")), 32, 0.002, spin_s=-1.0)
