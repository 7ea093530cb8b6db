"""The inference worker in a child process (the default): same answers, same errors, and
the service survives the worker's death, hang or freeze; large uploads go through the
decoders without holding anyone up. No test measures time."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.inference import supervisor
from app.inference.messages import INLINE_MAX_BYTES
from app.main import create_app
from app.predictor import Predictor
from app.settings import Settings
from tests.app.held_forward import SAFETY_S
from tests.app.images import encode, png_bytes, product_photo
from tests.app.routes.test_metrics import metric_value
from tests.app.routes.test_predict import decode_data_url
from tests.app.routes.test_predict_concurrency import scores, upload, wait_for


def child_pid(client: TestClient) -> int:
    pid = client.app.state.service.engine.pid  # type: ignore[attr-defined]
    assert pid is not None and pid != os.getpid()
    return int(pid)


def test_the_default_serves_from_a_child_process(settings: Settings) -> None:
    assert settings.inference_process is True
    with TestClient(create_app(settings)) as client:
        pid = child_pid(client)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
    # Shut down with the app: no process left behind.
    wait_for(lambda: not _alive(pid))


def test_concurrent_requests_are_batched_and_answer_as_in_threads_and_one_by_one(
    trained_checkpoint: Path, fashion_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data import load_fashion_mnist

    monkeypatch.setattr(supervisor, "HANG_AFTER_S", 60.0)  # the worker is stopped on purpose below

    images, _ = load_fashion_mnist(fashion_root, train=False)
    pngs = [encode(image.numpy()) for image in images[:256]]
    params = {"top_k": 10}
    in_threads = Settings(model_path=trained_checkpoint, device="cpu", inference_process=False)
    with TestClient(create_app(in_threads)) as client:
        reference = [scores(client.post("/predict", params=params, files=upload(png))) for png in pngs]
    with TestClient(create_app(Settings(model_path=trained_checkpoint, device="cpu"))) as client:
        alone = [scores(client.post("/predict", params=params, files=upload(png))) for png in pngs]
        passes_alone = metric_value(client.get("/metrics").text, "fashion_batch_size_count")
        # The worker stopped until 64 requests wait for it: they reach it together, whatever
        # the threads' timing, and must share forward passes.
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        pid = child_pid(client)

        def post(png: bytes) -> dict[int, float]:
            return scores(client.post("/predict", params=params, files=upload(png)))

        os.kill(pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(64) as pool:
                posted = [pool.submit(post, png) for png in pngs]
                wait_for(lambda: engine.depth == 64)
                os.kill(pid, signal.SIGCONT)
                together = [future.result() for future in posted]
        finally:
            os.kill(pid, signal.SIGCONT)
        text = client.get("/metrics").text
    assert passes_alone == 256  # one at a time: one forward pass each
    passes = metric_value(text, "fashion_batch_size_count") - passes_alone
    assert metric_value(text, "fashion_batch_size_sum") == 512
    assert passes < 256  # sent together, some shared a forward pass
    for expected, got_alone, got_together in zip(reference, alone, together, strict=True):
        assert expected.keys() == got_alone.keys() == got_together.keys()
        for index, probability in expected.items():
            assert got_alone[index] == pytest.approx(probability, abs=1e-5)
            assert got_together[index] == pytest.approx(probability, abs=1e-5)


def test_errors_batches_and_the_input_image_cross_the_process_boundary(client: TestClient) -> None:
    bad = client.post("/predict", files={"file": ("notes.pdf", b"%PDF-1.4 not an image", "application/pdf")})
    assert bad.status_code == 415 and "PDF" in bad.json()["detail"]
    files = [("files", ("a.png", png_bytes(), "image/png")), ("files", ("b.txt", b"", "text/plain"))]
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code == 400 and batch.json()["detail"].startswith("files[1] (b.txt): ")
    shown = client.post("/predict", params={"include_input": True, "top_k": 2}, files=upload(png_bytes()))
    body = shown.json()
    assert shown.status_code == 200 and body["input_image"].startswith("data:image/png;base64,")
    assert len(body["top_k"]) == 2
    good = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
    assert len(client.post("/predict/batch", files=good).json()["predictions"]) == 3
    text = client.get("/metrics").text
    assert metric_value(text, "fashion_queue_wait_seconds_count") == metric_value(
        text, "fashion_batch_size_sum"
    )


def test_a_full_queue_answers_503_and_the_held_request_is_answered_later(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", max_queue=1, max_batch_files=1)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        pid = child_pid(client)
        os.kill(pid, signal.SIGSTOP)  # the child holds what it is sent
        try:
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(client.post, "/predict", files=upload(png_bytes()))
                wait_for(lambda: engine.depth == 1)
                refused = client.post("/predict", files=upload(png_bytes()))
                os.kill(pid, signal.SIGCONT)
                assert held.result(SAFETY_S).status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert engine.depth == 0
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_request_past_the_timeout_gets_504(tiny_checkpoint: Path) -> None:
    # A microsecond: no answer can cross two pipes that fast.
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=1e-6)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", files=upload(png_bytes()))
        assert response.status_code == 504 and "no prediction within" in response.json()["detail"]
        assert client.app.state.service.engine.depth == 0  # type: ignore[attr-defined]


def test_requests_that_timed_out_in_the_pipe_are_not_computed(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        pid = child_pid(client)
        computed = metric_value(client.get("/metrics").text, "fashion_batch_size_sum")
        os.kill(pid, signal.SIGSTOP)  # the uploads wait in the pipe past their deadline
        try:
            with ThreadPoolExecutor(4) as pool:
                late = list(pool.map(lambda _: client.post("/predict", files=upload(png_bytes())), range(4)))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [response.status_code for response in late] == [504] * 4
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        # The timed-out images never reached the model: only the last request did.
        assert metric_value(client.get("/metrics").text, "fashion_batch_size_sum") == computed + 1


def test_a_frozen_worker_is_found_by_its_silence_and_replaced(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "HANG_AFTER_S", 1.0)
    with TestClient(create_app(Settings(model_path=tiny_checkpoint, device="cpu"))) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        frozen = child_pid(client)
        os.kill(frozen, signal.SIGSTOP)  # alive, answering nothing; no request is waiting on it
        try:
            unhealthy: list[Any] = []  # the first 503, kept: the new worker may be up by the next call
            wait_for(
                lambda: (health := client.get("/health")).status_code == 503 and not unhealthy.append(health)
            )
            assert unhealthy[0].json()["detail"] == "the inference process stopped and is restarting"
            wait_for(lambda: not _alive(frozen))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        wait_for(lambda: client.get("/health").status_code == 200)
        assert child_pid(client) != frozen and engine.restarts == 1
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_requests_held_by_a_frozen_worker_get_503_before_their_timeout(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "HANG_AFTER_S", 1.0)
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=SAFETY_S * 2)
    with TestClient(create_app(settings)) as client:
        frozen = child_pid(client)
        os.kill(frozen, signal.SIGSTOP)
        try:
            response = client.post("/predict", files=upload(png_bytes()))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        wait_for(lambda: client.get("/health").status_code == 200)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_an_idle_worker_is_not_taken_for_a_hung_one(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle worker says it is alive (heartbeats): time without requests is not silence.
    monkeypatch.setattr(supervisor, "HANG_AFTER_S", 1.0)
    with TestClient(create_app(Settings(model_path=tiny_checkpoint, device="cpu"))) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        pid = child_pid(client)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        time.sleep(3 * supervisor.HANG_AFTER_S)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        assert child_pid(client) == pid and engine.restarts == 0


def large_photo() -> bytes:
    """A 300x400 product photo with some noise: tens of KiB, decoded by a decoder process."""
    pixels = product_photo(300, 400).astype(int) + np.random.default_rng(0).integers(-3, 4, (400, 300))
    data = encode(np.clip(pixels, 0, 255).astype(np.uint8))
    assert len(data) > INLINE_MAX_BYTES
    return data


@contextmanager
def decoders_stopped(client: TestClient) -> Iterator[None]:
    """The decoder processes frozen: a large upload waits for them while the test looks on."""
    pids = client.app.state.service.engine.decoders.pids  # type: ignore[attr-defined]
    assert pids and os.getpid() not in pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_large_upload_is_decoded_by_a_decoder_and_holds_up_no_one(settings: Settings) -> None:
    large = large_photo()
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        params = {"include_input": True, "top_k": 10}
        with decoders_stopped(client):
            pending = pool.submit(client.post, "/predict", params=params, files=upload(large))
            wait_for(lambda: engine.depth == 1)
            small = client.post("/predict", files=upload(png_bytes()))
            assert small.status_code == 200 and not pending.done()  # answered while the large one waits
        response = pending.result(SAFETY_S)
    offline = Predictor.load(settings.model_path, "cpu").classify(large, top_k=10, keep_image=True)
    body = response.json()
    assert response.status_code == 200
    steps = offline.steps
    assert steps.background is not None and steps.box is not None
    assert body["preprocessing"] == {
        "original_size": [300, 400],
        "inverted": steps.inverted,
        "background": steps.background,
        "box": list(steps.box),
    }
    expected = {s.index: s.probability for s in offline.top}
    for index, probability in scores(response).items():
        assert probability == pytest.approx(expected[index], abs=1e-5)
    assert offline.input_image is not None
    assert np.array_equal(np.asarray(decode_data_url(body["input_image"])), np.asarray(offline.input_image))


def test_a_large_upload_still_decoding_at_its_timeout_gets_504_on_time(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        with decoders_stopped(client):
            response = client.post("/predict", files=upload(large_photo()))
        assert response.status_code == 504
        assert client.app.state.service.engine.depth == 0  # type: ignore[attr-defined]
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        assert client.post("/predict", files=upload(large_photo())).status_code == 200


def test_a_large_upload_decoding_when_the_worker_dies_is_served_by_the_next(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        first = child_pid(client)
        with decoders_stopped(client):
            pending = pool.submit(client.post, "/predict", files=upload(large_photo()))
            wait_for(lambda: engine.depth == 1)
            os.kill(first, signal.SIGKILL)  # the worker never had it: it waits for the next one
            wait_for(lambda: engine.pid not in (None, first) and engine.ready)
        assert pending.result(SAFETY_S).status_code == 200


def test_a_batch_names_its_first_bad_file_whatever_their_sizes(client: TestClient) -> None:
    broken = large_photo()[:-100]
    files = [("files", ("a.png", b"not an image", "image/png")), ("files", ("b.png", broken, "image/png"))]
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code in (400, 415) and batch.json()["detail"].startswith("files[0] (a.png): ")


def test_a_bad_large_upload_is_refused_as_a_small_one_would_be(client: TestClient) -> None:
    broken = large_photo()[:-100]  # truncated: its last rows are missing
    single = client.post("/predict", files=upload(broken))
    assert single.status_code == 400 and "truncated" in single.json()["detail"]
    files = [("files", ("a.png", png_bytes(), "image/png")), ("files", ("b.png", broken, "image/png"))]
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code == 400 and batch.json()["detail"].startswith("files[1] (b.png): ")
    assert client.post("/predict", files=upload(large_photo())).status_code == 200


def test_when_the_child_dies_requests_get_503_and_a_new_child_takes_over(client: TestClient) -> None:
    first = child_pid(client)
    os.kill(first, signal.SIGKILL)
    # Until the parent notices, a request may still be written to the dead child's pipe:
    # either way it is answered, with 503 and Retry-After, never left hanging.
    wait_for(lambda: client.app.state.service.engine.pid != first)  # type: ignore[attr-defined]
    wait_for(lambda: client.get("/health").status_code == 200)
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200
    assert child_pid(client) != first
    assert client.app.state.service.engine.restarts == 1  # type: ignore[attr-defined]


def test_requests_held_by_a_dying_child_fail_with_503_and_health_says_restarting(client: TestClient) -> None:
    engine = client.app.state.service.engine  # type: ignore[attr-defined]
    os.kill(child_pid(client), signal.SIGSTOP)  # the child stops answering, holding what it gets
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/predict", files=upload(png_bytes()))
        wait_for(lambda: engine.depth == 1)
        os.kill(child_pid(client), signal.SIGKILL)
        response = pending.result(SAFETY_S)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert "inference process stopped" in response.json()["detail"]
    health = client.get("/health")
    if health.status_code == 503:  # the new child may already be up
        assert health.json() == {
            "status": "loading",
            "detail": "the inference process stopped and is restarting",
        }
    wait_for(lambda: client.get("/health").status_code == 200)
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_replacement_worker_on_torch_refuses_a_model_file_replaced_since_start_up(
    tiny_checkpoint: Path, trained_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # On torch each worker reads the file itself: a replacement must find the one served.
    model = tmp_path / "model.pth"
    shutil.copy(tiny_checkpoint, model)
    settings = Settings(model_path=model, device="cpu", runtime="torch")
    logged = caplog.at_level(logging.ERROR, logger="app.inference.supervisor")
    with logged, TestClient(create_app(settings)) as client:
        shutil.copy(trained_checkpoint, model)
        os.kill(child_pid(client), signal.SIGKILL)
        wait_for(lambda: any("changed since start-up" in r.getMessage() for r in caplog.records))
        assert client.get("/health").status_code == 503


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_a_replacement_worker_on_an_export_serves_the_graph_exported_at_start_up(
    tiny_checkpoint: Path, trained_checkpoint: Path, tmp_path: Path, runtime: str
) -> None:
    model = tmp_path / "model.pth"
    shutil.copy(tiny_checkpoint, model)
    settings = Settings(model_path=model, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        served = client.get("/model").json()
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        first = child_pid(client)
        shutil.copy(trained_checkpoint, model)  # not read again: the exported graph is held
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: engine.pid not in (None, first) and engine.ready)
        again = client.get("/model").json()
        assert (again["sha256"], again["runtime"]) == (served["sha256"], runtime)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0 until it is reaped; read its state (if it is still there).
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failed_restart_is_tried_again(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    watcher = client.app.state.service.engine.supervisor  # type: ignore[attr-defined]
    launch, attempts = watcher._launch, []

    async def failing_once() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no memory for a new process")
        await launch()

    watcher._launch = failing_once
    os.kill(child_pid(client), signal.SIGKILL)
    wait_for(lambda: len(attempts) == 2 and client.get("/health").status_code == 200)
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200
    assert "cannot start an inference process; retrying" in caplog.text
