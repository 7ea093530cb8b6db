"""The batching rule, in one place."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def collate(
    pending: deque[T], receive: Callable[[], bool], max_batch_size: int, max_wait_s: float
) -> list[T]:
    """Take the next forward pass's images from ``pending``, at most ``max_batch_size``.

    While there is room, ``receive`` adds what has already arrived (it returns False when
    nothing is waiting): the pass never waits for a client that may not come, so a lone
    request goes straight to the model, and under load a pass takes everything queued
    behind the previous one. Receiving stops ``max_wait_s`` after the pass began to fill.
    """
    deadline = time.perf_counter() + max_wait_s
    while len(pending) < max_batch_size and time.perf_counter() < deadline and receive():
        pass
    return [pending.popleft() for _ in range(min(max_batch_size, len(pending)))]
