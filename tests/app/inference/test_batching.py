"""The batching rule: what a forward pass takes, and when it stops taking more."""

from __future__ import annotations

from collections import deque

from app.inference.batching import collate


def test_a_pass_takes_at_most_the_batch_size_and_leaves_the_rest_in_order() -> None:
    pending = deque(range(10))
    assert collate(pending, lambda: False, max_batch_size=4, max_wait_s=0.1) == [0, 1, 2, 3]
    assert list(pending) == [4, 5, 6, 7, 8, 9]


def test_a_pass_with_room_takes_what_has_already_arrived() -> None:
    pending: deque[int] = deque([0])
    arrived = deque([[1, 2], [3], [4, 5, 6]])

    def receive() -> bool:
        if not arrived:
            return False
        pending.extend(arrived.popleft())
        return True

    assert collate(pending, receive, max_batch_size=5, max_wait_s=3600) == [0, 1, 2, 3, 4]
    assert list(pending) == [5, 6]


def test_a_lone_request_never_waits_for_company() -> None:
    # An hour's wait allowed, and nothing else has arrived: the pass goes at once.
    calls = []
    pending = deque(["alone"])
    assert collate(pending, lambda: calls.append(1) is not None, max_batch_size=32, max_wait_s=3600) == [
        "alone"
    ]
    assert calls == [1]


def test_no_more_is_taken_once_the_wait_is_over() -> None:
    calls = []

    def receive() -> bool:
        calls.append(1)
        pending.append(len(calls))
        return True

    pending = deque([0])
    assert collate(pending, receive, max_batch_size=32, max_wait_s=0.0) == [0]
    assert calls == []
