"""POST /predict under concurrency: batched answers equal one-at-a-time ones; 503 and 504.

A forward pass is held on an event (tests/app/held_forward.py) so that what queues behind
it is known exactly; no test measures time. Holding needs the batcher in this process
(``inference_process=False``); tests/app/inference/test_worker_process.py covers the child process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.held_forward import SAFETY_S, HeldForward
from tests.app.images import encode, png_bytes
from tests.app.routes.test_metrics import metric_value

N_IMAGES = 256
CONCURRENCY = 64


def upload(data: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("item.png", data, "image/png")}


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[TestClient, HeldForward]]:
    """A client whose forward passes are recorded; the first waits for ``release``."""
    with TestClient(create_app(settings)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        held = HeldForward(service.predictor)
        service.predictor.predict_scored = held
        try:
            yield client, held
        finally:
            held.release.set()


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll until true; the deadline is a safety net, not a measurement."""
    deadline = time.monotonic() + SAFETY_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.001)


def scores(response: httpx.Response) -> dict[int, float]:
    assert response.status_code == 200, response.text
    return {item["class_index"]: item["probability"] for item in response.json()["top_k"]}


def test_real_images_sent_together_get_the_answers_they_get_one_by_one(
    trained_checkpoint: Path, fashion_root: Path
) -> None:
    from training.data import load_fashion_mnist

    images, _ = load_fashion_mnist(fashion_root, train=False)
    pngs = [encode(image.numpy()) for image in images[:N_IMAGES]]
    params = {"top_k": 10}
    # A wait long enough for the worker to decode every queued upload into the next pass.
    settings = Settings(
        model_path=trained_checkpoint, device="cpu", inference_process=False, max_batch_wait_ms=1000
    )
    with serving(settings) as (client, held):
        held.release.set()
        alone = [scores(client.post("/predict", params=params, files=upload(png))) for png in pngs]
        assert set(held.sizes) == {1}
        held.sizes.clear()
        held.release.clear()
        held.started.clear()
        engine = client.app.state.service.engine  # type: ignore[attr-defined]

        def post(png: bytes) -> httpx.Response:
            return client.post("/predict", params=params, files=upload(png))

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            # The first image alone, held in its forward pass: sent with the others, two of
            # them could reach the idle model together, and the pass would not be of one.
            pending = [pool.submit(post, pngs[0])]
            wait_for(held.started.is_set)
            pending += [pool.submit(post, png) for png in pngs[1:]]
            # Hold the first pass until every other in-flight request is queued behind it.
            wait_for(lambda: engine.depth == CONCURRENCY and engine.supervisor.unsent_bytes == 0)
            held.release.set()
            together = [scores(future.result(SAFETY_S)) for future in pending]
        metrics = client.get("/metrics").text
    assert held.sizes[:2] == [1, 32]
    assert metric_value(metrics, 'fashion_batch_size_bucket{le="1.0"}') < metric_value(
        metrics, "fashion_batch_size_count"
    )
    for one, other in zip(alone, together, strict=True):
        assert list(one) == list(other)  # the same classes, in the same order
        for index, probability in one.items():
            assert other[index] == pytest.approx(probability, abs=1e-5)


def test_batch_requests_go_through_the_same_queue(thread_settings: Settings) -> None:
    with serving(thread_settings) as (client, held):
        held.release.set()
        files = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
        assert client.post("/predict/batch", files=files).status_code == 200
        assert held.sizes == [3]
        text = client.get("/metrics").text
    assert metric_value(text, "fashion_batch_size_sum") == 3
    assert metric_value(text, "fashion_queue_wait_seconds_count") == 3
    assert metric_value(text, "fashion_inference_seconds_count") == 1
    assert metric_value(text, "fashion_queue_depth") == 0


def test_a_full_queue_answers_503_with_retry_after(tiny_checkpoint: Path) -> None:
    settings = Settings(
        model_path=tiny_checkpoint, device="cpu", max_queue=1, max_batch_files=1, inference_process=False
    )
    with serving(settings) as (client, held), ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/predict", files=upload(png_bytes()))
        assert held.started.wait(SAFETY_S)
        busy = client.post("/predict", files=upload(png_bytes()))
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert busy.json() == {"detail": "the server is busy; retry shortly"}
        batch = client.post("/predict/batch", files=[("files", ("a.png", png_bytes(), "image/png"))])
        assert batch.status_code == 503
        held.release.set()
        assert first.result(SAFETY_S).status_code == 200
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_request_past_the_timeout_gets_504_and_frees_its_slot(tiny_checkpoint: Path) -> None:
    settings = Settings(
        model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.05, inference_process=False
    )
    with serving(settings) as (client, held):
        response = client.post("/predict", files=upload(png_bytes()))  # held in its forward pass
        assert response.status_code == 504
        assert response.json() == {"detail": "no prediction within 0.05 s; retry"}
        assert metric_value(client.get("/metrics").text, "fashion_queue_depth") == 0
        assert not held.release.is_set()  # the slot was freed while the pass still ran
