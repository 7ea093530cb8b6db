"""Decoding and inference in a child process (the default): same answers, same errors, and
the service survives the child's death. No test measures time."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import inference_process
from app.inference_process import WorkerConfig
from app.lifespan import StartupError
from app.main import create_app
from app.predictor import Predictor
from app.settings import Settings
from models.preprocessing import InvertMode
from tests.app.held_forward import SAFETY_S
from tests.app.images import encode, png_bytes, product_photo
from tests.app.routes.test_metrics import metric_value
from tests.app.routes.test_predict import decode_data_url
from tests.app.routes.test_predict_concurrency import scores, upload, wait_for


def child_pid(client: TestClient) -> int:
    pid = client.app.state.service.batcher.pid  # type: ignore[attr-defined]
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
    trained_checkpoint: Path, fashion_root: Path
) -> None:
    from training.data import load_fashion_mnist

    images, _ = load_fashion_mnist(fashion_root, train=False)
    pngs = [encode(image.numpy()) for image in images[:256]]
    params = {"top_k": 10}
    in_threads = Settings(model_path=trained_checkpoint, device="cpu", inference_process=False)
    with TestClient(create_app(in_threads)) as client:
        reference = [scores(client.post("/predict", params=params, files=upload(png))) for png in pngs]
    with TestClient(create_app(Settings(model_path=trained_checkpoint, device="cpu"))) as client:
        alone = [scores(client.post("/predict", params=params, files=upload(png))) for png in pngs]
        passes_alone = metric_value(client.get("/metrics").text, "fashion_batch_size_count")
        with ThreadPoolExecutor(64) as pool:
            together = list(
                pool.map(lambda png: scores(client.post("/predict", params=params, files=upload(png))), pngs)
            )
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
        batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
        pid = child_pid(client)
        os.kill(pid, signal.SIGSTOP)  # the child holds what it is sent
        try:
            with ThreadPoolExecutor(1) as pool:
                held = pool.submit(client.post, "/predict", files=upload(png_bytes()))
                wait_for(lambda: batcher.depth == 1)
                refused = client.post("/predict", files=upload(png_bytes()))
                os.kill(pid, signal.SIGCONT)
                assert held.result(SAFETY_S).status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert batcher.depth == 0
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_request_past_the_timeout_gets_504(tiny_checkpoint: Path) -> None:
    # A microsecond: no answer can cross two pipes that fast.
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=1e-6)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", files=upload(png_bytes()))
        assert response.status_code == 504 and "no prediction within" in response.json()["detail"]
        assert client.app.state.service.batcher.depth == 0  # type: ignore[attr-defined]


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


def test_a_child_that_hangs_is_killed_and_replaced(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference_process, "MIN_STALL_S", 0.0)  # two timeouts of silence are enough
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
        hung = child_pid(client)
        os.kill(hung, signal.SIGSTOP)  # alive, holding what it is sent, answering nothing
        try:
            # One client, one request at a time: each times out on its own, and the silence
            # adds up across them until it reaches two timeouts.
            statuses = []
            while _alive(hung) and len(statuses) < 20:
                statuses.append(client.post("/predict", files=upload(png_bytes())).status_code)
            wait_for(lambda: not _alive(hung))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGCONT)
        assert statuses[0] == 504 and set(statuses) <= {503, 504}  # 503 once it is restarting
        wait_for(lambda: client.get("/health").status_code == 200)
        assert child_pid(client) != hung and batcher.restarts == 1
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_silence_shorter_than_the_floor_leaves_the_child_alone(tiny_checkpoint: Path) -> None:
    # The floor (MIN_STALL_S, 10 s) is longer than these three timeouts: no hang yet.
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
        pid = child_pid(client)
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(3):
                assert client.post("/predict", files=upload(png_bytes())).status_code == 504
        finally:
            os.kill(pid, signal.SIGCONT)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        assert child_pid(client) == pid and batcher.restarts == 0


def test_a_child_that_answers_after_an_idle_spell_is_not_taken_for_a_hung_one(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its silence counts only while it holds work: time idle between requests is not silence.
    monkeypatch.setattr(inference_process, "MIN_STALL_S", 0.0)
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
        pid = child_pid(client)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        time.sleep(3 * settings.request_timeout_s)  # idle for longer than two timeouts
        os.kill(pid, signal.SIGSTOP)
        try:
            assert client.post("/predict", files=upload(png_bytes())).status_code == 504
        finally:
            os.kill(pid, signal.SIGCONT)
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200
        assert child_pid(client) == pid and batcher.restarts == 0


def large_photo() -> bytes:
    """A 300x400 product photo with some noise: tens of KiB, decoded in the server process."""
    pixels = product_photo(300, 400).astype(int) + np.random.default_rng(0).integers(-3, 4, (400, 300))
    data = encode(np.clip(pixels, 0, 255).astype(np.uint8))
    assert len(data) > inference_process.LARGE_UPLOAD_BYTES
    return data


class HeldDecode:
    """``Predictor.decode`` of this (the server's) process, held for large uploads until
    released; the child decodes with its own code, unpatched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()  # a held decode has returned (or given up)
        self.decoded: list[int] = []  # sizes of the large uploads decoded here
        decode = Predictor.decode

        def held(predictor: Predictor, data: bytes, invert: InvertMode = "auto", keep: bool = False) -> Any:
            if len(data) <= inference_process.LARGE_UPLOAD_BYTES:
                return decode(predictor, data, invert, keep)
            self.decoded.append(len(data))
            self.started.set()
            try:
                assert self.release.wait(SAFETY_S)
                return decode(predictor, data, invert, keep)
            finally:
                self.finished.set()

        monkeypatch.setattr(Predictor, "decode", held)


def test_a_large_upload_is_decoded_in_the_server_and_holds_up_no_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldDecode(monkeypatch)
    large = large_photo()
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        params = {"include_input": True, "top_k": 10}
        pending = pool.submit(client.post, "/predict", params=params, files=upload(large))
        assert held.started.wait(SAFETY_S)
        small = client.post("/predict", files=upload(png_bytes()))
        assert small.status_code == 200 and not pending.done()  # answered while the large one decodes
        held.release.set()
        response = pending.result(SAFETY_S)
    assert held.decoded == [len(large)]  # by the server process (before the reference below)
    offline = Predictor.load(settings.model_path, "cpu").classify(large, top_k=10, keep_image=True)
    body = response.json()
    assert response.status_code == 200
    assert body["preprocessing"] == {"original_size": [300, 400], "inverted": offline.inverted}
    expected = {s.index: s.probability for s in offline.top}
    for index, probability in scores(response).items():
        assert probability == pytest.approx(expected[index], abs=1e-5)
    assert offline.input_image is not None
    assert np.array_equal(np.asarray(decode_data_url(body["input_image"])), np.asarray(offline.input_image))


def test_a_large_upload_still_decoding_at_its_timeout_gets_504_on_time(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldDecode(monkeypatch)
    settings = Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        try:
            response = client.post("/predict", files=upload(large_photo()))
            assert not held.finished.is_set()  # answered while its decode is still held
        finally:
            held.release.set()
        assert response.status_code == 504
        assert client.app.state.service.batcher.depth == 0  # type: ignore[attr-defined]
        assert client.post("/predict", files=upload(png_bytes())).status_code == 200


def test_a_large_upload_decoding_when_the_child_dies_is_served_by_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldDecode(monkeypatch)
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
        first = child_pid(client)
        pending = pool.submit(client.post, "/predict", files=upload(large_photo()))
        assert held.started.wait(SAFETY_S)
        os.kill(first, signal.SIGKILL)  # the child never had it: it waits for the next one
        wait_for(lambda: batcher.pid not in (None, first) and batcher.ready)
        held.release.set()
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
    wait_for(lambda: client.app.state.service.batcher.pid != first)  # type: ignore[attr-defined]
    wait_for(lambda: client.get("/health").status_code == 200)
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200
    assert child_pid(client) != first
    assert client.app.state.service.batcher.restarts == 1  # type: ignore[attr-defined]


def test_requests_held_by_a_dying_child_fail_with_503_and_health_says_restarting(client: TestClient) -> None:
    batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
    os.kill(child_pid(client), signal.SIGSTOP)  # the child stops answering, holding what it gets
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, "/predict", files=upload(png_bytes()))
        wait_for(lambda: batcher.depth == 1)
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


def test_a_model_file_replaced_after_the_check_stops_start_up(
    tiny_checkpoint: Path, trained_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parent checks the file, then the child loads it: it must be the same file.
    app = create_app(Settings(model_path=tiny_checkpoint, device="cpu"))

    def swapped(**kwargs: object) -> WorkerConfig:
        return WorkerConfig(**{**kwargs, "model_path": str(trained_checkpoint)})  # type: ignore[arg-type]

    monkeypatch.setattr("app.lifespan.WorkerConfig", swapped)
    with pytest.raises(StartupError, match="changed since start-up"), TestClient(app):
        pass
    assert app.state.service.status == "error"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0 until it is reaped; read its state.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_failed_restart_is_tried_again(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
    spawn, attempts = batcher._spawn, []

    async def failing_once() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no memory for a new process")
        await spawn()

    batcher._spawn = failing_once
    os.kill(child_pid(client), signal.SIGKILL)
    wait_for(lambda: len(attempts) == 2 and client.get("/health").status_code == 200)
    assert client.post("/predict", files=upload(png_bytes())).status_code == 200
    assert "cannot start an inference process; retrying" in caplog.text
