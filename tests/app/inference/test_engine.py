"""The engine as plain Python: batches form under concurrency, a lone request never waits,
the queue is bounded, a request times out and frees its slot, errors reach their request.

The worker runs in a thread here (the same code as in its process), so a forward pass can
be held on an event until the test releases it: what is queued behind it is then known
exactly; timeouts are only safety nets. No test measures time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.inference.decoders import DecoderLimits, DecoderPool
from app.inference.engine import InferenceEngine
from app.inference.hosts import ThreadHost, mp_context
from app.inference.messages import Decoded, Task
from app.inference.protocol import InferenceTimeoutError, NonFiniteOutputError, QueueFullError
from app.inference.worker import Worker
from app.metrics import Metrics
from app.prediction import ItemError
from app.predictor import Predictor, PredictorModel
from models.images import CorruptImageError, EmptyImageError, Steps
from tests.app.held_forward import SAFETY_S, HeldForward
from tests.app.images import GARBAGE, fashion_like, png_bytes


@pytest.fixture
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.load(tiny_checkpoint, device="cpu")


@pytest.fixture
def held(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldForward]:
    forward = HeldForward(predictor)
    monkeypatch.setattr(predictor, "predict_scored", forward)
    yield forward
    forward.release.set()  # never leave the worker blocked


@asynccontextmanager
async def running(
    predictor: Predictor, max_batch_size: int = 32, max_wait_s: float = 0.002, **options: Any
) -> AsyncIterator[InferenceEngine]:
    """An engine whose worker is a thread of this process, closed afterwards, passed or failed."""
    limits = DecoderLimits(cpu_s=5.0, memory_bytes=512 * 2**20, max_pixels=predictor.max_image_pixels)
    model = PredictorModel(predictor)
    engine = InferenceEngine(
        Metrics(),
        ThreadHost(lambda: Worker(model, max_batch_size, max_wait_s, predictor.max_image_pixels)),
        DecoderPool(1, limits, mp_context()),
        **options,
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()


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


def test_a_lone_request_goes_straight_to_the_model(predictor: Predictor, held: HeldForward) -> None:
    # With an hour's wait allowed, only a request that skips the wait can finish at all.
    held.release.set()

    async def main() -> None:
        async with running(predictor, max_wait_s=3600) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        for data in images(3):
            async with asyncio.timeout(SAFETY_S):
                await engine.classify(data)

    run(main)
    assert held.sizes == [1, 1, 1]


def test_requests_queued_behind_a_forward_pass_share_the_next_ones(
    predictor: Predictor, held: HeldForward
) -> None:
    payloads = images(41)

    async def main() -> None:
        async with running(predictor, max_batch_size=32, max_wait_s=3600) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        first = asyncio.ensure_future(engine.classify(payloads[0]))
        await until(held.started.is_set)
        rest = [asyncio.ensure_future(engine.classify(data)) for data in payloads[1:]]
        # All sent, and taken by the socket: the worker reads them all once released.
        await until(lambda: engine.depth == 41 and engine.supervisor.unsent_bytes == 0)
        held.release.set()
        results = await asyncio.gather(first, *rest)
        assert len(results) == 41
        assert engine.metrics.registry.get_sample_value("fashion_batch_size_sum") == 41

    run(main)
    assert held.sizes == [1, 32, 8]


def test_batched_results_match_one_at_a_time(predictor: Predictor, held: HeldForward) -> None:
    payloads = images(20)
    held.release.set()

    async def main() -> None:
        async with running(predictor) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        together = await asyncio.gather(*(engine.classify(data, top_k=10) for data in payloads))
        many = await engine.classify_many(payloads, top_k=10)
        for data, a, b in zip(payloads, together, many, strict=True):
            alone = predictor.classify(data, top_k=10)
            for prediction in (a, b):
                assert [s.index for s in prediction.top] == [s.index for s in alone.top]
                for got, want in zip(prediction.top, alone.top, strict=True):
                    assert got.probability == pytest.approx(want.probability, abs=1e-5)

    run(main)


def test_pixels_uint8_and_float_share_a_pass_and_match_the_decoded_upload(
    predictor: Predictor, held: HeldForward
) -> None:
    picture = fashion_like()
    as_uint8 = picture.tobytes()
    as_float = (picture.astype(np.float32) / 255).tobytes()

    async def main() -> None:
        async with running(predictor, max_batch_size=32, max_wait_s=3600) as engine:
            first = asyncio.ensure_future(engine.classify(png_bytes(picture), top_k=10))
            await until(held.started.is_set)
            # Queued behind the held pass: both kinds of pixels go into the next one, together.
            rest = [
                asyncio.ensure_future(engine.classify_pixels([as_uint8], "uint8", top_k=10)),
                asyncio.ensure_future(engine.classify_pixels([as_float], "float32", top_k=10)),
            ]
            await until(lambda: engine.depth == 3 and engine.supervisor.unsent_bytes == 0)
            # Pixels of the wrong size never reach the worker.
            with pytest.raises(ValueError, match="take 3136 bytes as float32"):
                await engine.classify_pixels([as_uint8], "float32")
            held.release.set()
            decoded = await first
            (from_uint8,), (from_float,) = await asyncio.gather(*rest)
            for prediction in (from_uint8, from_float):
                assert [s.index for s in prediction.top] == [s.index for s in decoded.top]
                for got, want in zip(prediction.top, decoded.top, strict=True):
                    assert got.probability == pytest.approx(want.probability, abs=1e-6)

    run(main)
    assert held.sizes == [1, 2]


def test_malformed_pixels_that_reach_the_worker_fail_their_task_and_it_carries_on(
    predictor: Predictor,
) -> None:
    async def main() -> None:
        async with running(predictor, timeout_s=SAFETY_S) as engine:
            broken = Decoded(bytes(100), Steps((28, 28), False), "float32")
            engine.supervisor.send([Task(10**9, (broken,), "false", False, 3, time.monotonic() + 60)])
            assert (await engine.classify(png_bytes())).top  # the worker is still there

    run(main)


def test_a_non_finite_output_fails_its_own_request_only(predictor: Predictor, held: HeldForward) -> None:
    inner = held.inner

    def black_is_nan(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        probabilities, scores = inner(batch)
        probabilities = probabilities.clone()
        probabilities[batch.flatten(1).float().sum(dim=1) == 0] = float("nan")
        return probabilities, scores

    held.inner = black_is_nan
    black = png_bytes(np.zeros((28, 28), dtype=np.uint8))

    async def main() -> None:
        async with running(predictor, max_batch_size=32, max_wait_s=3600) as engine:
            first = asyncio.ensure_future(engine.classify(png_bytes()))
            await until(held.started.is_set)
            failing = asyncio.ensure_future(engine.classify_many([png_bytes(), black]))
            fine = asyncio.ensure_future(engine.classify(png_bytes()))
            await until(lambda: engine.depth == 4 and engine.supervisor.unsent_bytes == 0)
            held.release.set()
            assert (await first).top and (await fine).top
            with pytest.raises(
                NonFiniteOutputError, match="no finite probabilities for image 1 of this request"
            ):
                await failing

    run(main)
    assert held.sizes == [1, 3]  # the failing request shared its pass with one that was answered


def test_a_full_queue_refuses_at_once_and_accepts_again_once_drained(
    predictor: Predictor, held: HeldForward
) -> None:

    async def main() -> None:
        async with running(predictor, max_queue=3) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        first = asyncio.ensure_future(engine.classify(png_bytes()))
        await until(held.started.is_set)
        pair = asyncio.ensure_future(engine.classify_many([png_bytes(), png_bytes()]))
        await until(lambda: engine.depth == 3)
        with pytest.raises(QueueFullError):
            await engine.classify(png_bytes())
        held.release.set()
        await asyncio.gather(first, pair)
        assert engine.depth == 0
        await engine.classify(png_bytes())

    run(main)


def test_a_timed_out_request_frees_its_slot_and_is_never_computed(
    predictor: Predictor, held: HeldForward
) -> None:

    async def main() -> None:
        async with running(predictor, timeout_s=0.05, max_queue=2) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        first = asyncio.ensure_future(engine.classify(png_bytes()))
        await until(held.started.is_set)
        with pytest.raises(InferenceTimeoutError):
            await engine.classify(png_bytes())  # queued behind the held pass
        with pytest.raises(InferenceTimeoutError):
            await first  # in the held pass itself
        assert engine.depth == 0  # both slots are free while the pass is still held
        held.release.set()
        engine.timeout_s = SAFETY_S
        await engine.classify(png_bytes())

    run(main)
    assert held.sizes == [1, 1]  # the queued request that timed out was skipped


def test_image_errors_reach_their_own_request_only(predictor: Predictor, held: HeldForward) -> None:
    held.release.set()

    async def main() -> None:
        async with running(predictor) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        good, bad = await asyncio.gather(
            engine.classify(png_bytes()), engine.classify(b""), return_exceptions=True
        )
        assert not isinstance(good, BaseException)
        assert isinstance(bad, EmptyImageError)
        with pytest.raises(ItemError) as caught:
            await engine.classify_many([png_bytes(), GARBAGE])
        assert caught.value.index == 1
        assert isinstance(caught.value.error, CorruptImageError)
        assert engine.depth == 0

    run(main)


def test_a_failed_forward_pass_fails_its_requests_and_the_worker_carries_on(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    working = predictor.predict_scored

    def flaky(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return working(batch)

    monkeypatch.setattr(predictor, "predict_scored", flaky)

    async def main() -> None:
        async with running(predictor) as engine:
            await body(engine)

    async def body(engine: InferenceEngine) -> None:
        with pytest.raises(RuntimeError, match="out of memory"):
            await engine.classify(png_bytes())
        assert (await engine.classify(png_bytes())).top

    run(main)


def test_invalid_options_are_refused(predictor: Predictor) -> None:
    for options in ({"max_batch_size": 0}, {"max_wait_s": -1.0}):
        with pytest.raises(ValueError):
            Worker(PredictorModel(predictor), **{"max_batch_size": 32, "max_wait_s": 0.002, **options})
    host = ThreadHost(lambda: Worker(PredictorModel(predictor), 32, 0.002))
    limits = DecoderLimits(cpu_s=1.0, memory_bytes=2**28, max_pixels=10**6)
    for engine_options in ({"max_queue": 0}, {"timeout_s": 0.0}):
        with pytest.raises(ValueError):
            InferenceEngine(Metrics(), host, DecoderPool(1, limits, mp_context()), **engine_options)
