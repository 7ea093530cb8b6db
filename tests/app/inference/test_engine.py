"""The batcher as plain Python: batches form under concurrency, a lone request never waits,
the queue is bounded, a request times out and frees its slot, errors reach their request.

No test measures time: a forward pass is held on an event until the test releases it, so
what is queued behind it is known exactly; timeouts are only safety nets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from app.batching import Batcher, InferenceTimeoutError, QueueFullError
from app.metrics import Metrics
from app.predictor import ItemError, Predictor
from models.preprocessing import CorruptImageError, EmptyImageError
from tests.app.held_forward import SAFETY_S, HeldForward
from tests.app.images import GARBAGE, png_bytes


@pytest.fixture
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.load(tiny_checkpoint, device="cpu")


@pytest.fixture
def held(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldForward]:
    forward = HeldForward(predictor)
    monkeypatch.setattr(predictor, "predict_batch", forward)
    yield forward
    forward.release.set()  # never leave the worker blocked


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., Batcher]]:
    """Batchers that are closed after the test, passed or failed."""
    made: list[Batcher] = []

    def make(predictor: Predictor, **options: Any) -> Batcher:
        made.append(Batcher(predictor, Metrics(), **options))
        return made[-1]

    yield make
    for batcher in made:
        batcher.close()


async def until(condition: Callable[[], bool]) -> None:
    """Poll until true; the deadline is a safety net, not a measurement."""
    async with asyncio.timeout(SAFETY_S):
        while not condition():
            await asyncio.sleep(0.001)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def images(n: int) -> list[bytes]:
    """n different small PNGs, so the results differ from item to item."""
    generator = torch.Generator().manual_seed(0)
    return [
        png_bytes(torch.randint(0, 256, (28, 28), generator=generator, dtype=torch.uint8).numpy())
        for _ in range(n)
    ]


def test_a_lone_request_goes_straight_to_the_model(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    # With an hour's wait allowed, only a request that skips the wait can finish at all.
    batcher = make_batcher(predictor, max_wait_s=3600)
    held.release.set()

    async def main() -> None:
        for data in images(3):
            async with asyncio.timeout(SAFETY_S):
                await batcher.classify(data)

    run(main)
    assert held.sizes == [1, 1, 1]


def test_requests_queued_behind_a_forward_pass_share_the_next_ones(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    batcher = make_batcher(predictor, max_batch_size=32, max_wait_s=3600)
    payloads = images(41)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.classify(payloads[0]))
        await until(held.started.is_set)
        rest = [asyncio.ensure_future(batcher.classify(data)) for data in payloads[1:]]
        await until(lambda: batcher.waiting == 40)
        held.release.set()
        results = await asyncio.gather(first, *rest)
        assert len(results) == 41

    run(main)
    assert held.sizes == [1, 32, 8]
    assert batcher.metrics.registry.get_sample_value("fashion_batch_size_sum") == 41


def test_batched_results_match_one_at_a_time(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    batcher = make_batcher(predictor)
    payloads = images(20)
    held.release.set()

    async def main() -> None:
        together = await asyncio.gather(*(batcher.classify(data, top_k=10) for data in payloads))
        many = await batcher.classify_many(payloads, top_k=10)
        for data, a, b in zip(payloads, together, many, strict=True):
            alone = predictor.classify(data, top_k=10)
            for prediction in (a, b):
                assert [s.index for s in prediction.top] == [s.index for s in alone.top]
                for got, want in zip(prediction.top, alone.top, strict=True):
                    assert got.probability == pytest.approx(want.probability, abs=1e-5)

    run(main)


def test_a_full_queue_refuses_at_once_and_accepts_again_once_drained(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    batcher = make_batcher(predictor, max_queue=3)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.classify(png_bytes()))
        await until(held.started.is_set)
        pair = asyncio.ensure_future(batcher.classify_many([png_bytes(), png_bytes()]))
        await until(lambda: batcher.depth == 3)
        with pytest.raises(QueueFullError):
            await batcher.classify(png_bytes())
        held.release.set()
        await asyncio.gather(first, pair)
        assert batcher.depth == 0
        await batcher.classify(png_bytes())

    run(main)


def test_a_timed_out_request_frees_its_slot_and_is_never_computed(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    batcher = make_batcher(predictor, timeout_s=0.05, max_queue=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.classify(png_bytes()))
        await until(held.started.is_set)
        with pytest.raises(InferenceTimeoutError):
            await batcher.classify(png_bytes())  # queued behind the held pass
        with pytest.raises(InferenceTimeoutError):
            await first  # in the held pass itself
        assert batcher.depth == 0  # both slots are free while the pass is still held
        held.release.set()
        batcher.timeout_s = SAFETY_S
        await batcher.classify(png_bytes())

    run(main)
    assert held.sizes == [1, 1]  # the queued request that timed out was skipped


def test_image_errors_reach_their_own_request_only(
    make_batcher: Callable[..., Batcher], predictor: Predictor, held: HeldForward
) -> None:
    batcher = make_batcher(predictor)
    held.release.set()

    async def main() -> None:
        good, bad = await asyncio.gather(
            batcher.classify(png_bytes()), batcher.classify(b""), return_exceptions=True
        )
        assert not isinstance(good, BaseException)
        assert isinstance(bad, EmptyImageError)
        with pytest.raises(ItemError) as caught:
            await batcher.classify_many([png_bytes(), GARBAGE])
        assert caught.value.index == 1
        assert isinstance(caught.value.error, CorruptImageError)
        assert batcher.depth == 0

    run(main)


def test_a_failed_forward_pass_fails_its_requests_and_the_worker_carries_on(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch, make_batcher: Callable[..., Batcher]
) -> None:
    batcher = make_batcher(predictor)
    calls = []
    working = predictor.predict_batch

    def flaky(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        calls.append(len(tensors))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return working(tensors)

    monkeypatch.setattr(predictor, "predict_batch", flaky)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.classify(png_bytes())
        assert (await batcher.classify(png_bytes())).top

    run(main)


def test_invalid_options_are_refused(predictor: Predictor, make_batcher: Callable[..., Batcher]) -> None:
    for options in ({"max_batch_size": 0}, {"max_queue": 0}, {"max_wait_s": -1.0}, {"timeout_s": 0.0}):
        with pytest.raises(ValueError):
            make_batcher(predictor, **options)
