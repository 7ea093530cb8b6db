"""A version being unloaded stops its engine only once the requests using it are answered;
a request in flight when its version leaves the table finishes on that version."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.main import create_app
from app.repository import ServedVersion
from tests.app.held_forward import HeldForward
from tests.app.images import png_bytes
from tests.app.repository.conftest import ADMIN, repository_settings
from tests.app.routes.test_predict_concurrency import wait_for


class FakeEngine:
    ready = True
    runtime = "torch"

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def served_version() -> ServedVersion:
    return ServedVersion("m", "1", 1, predictor=None, engine=FakeEngine(), path=Path("m/1/model.pth"))  # type: ignore[arg-type]


def test_drain_waits_for_the_last_request() -> None:
    async def scenario() -> None:
        served = served_version()
        engine: Any = served.engine
        served.acquire()
        served.acquire()
        draining = asyncio.ensure_future(served.drain(timeout_s=30))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not engine.closed and not draining.done()
        served.release()
        for _ in range(10):
            await asyncio.sleep(0)
        assert not engine.closed
        served.release()
        await draining
        assert engine.closed

    asyncio.run(scenario())


def test_drain_of_an_idle_version_closes_at_once() -> None:
    served = served_version()
    asyncio.run(served.drain(timeout_s=30))
    assert served.engine.closed  # type: ignore[attr-defined]


def predict(client: TestClient) -> dict[str, Any]:
    response = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_request_in_flight_finishes_on_the_version_it_started_on(repository: Path) -> None:
    with TestClient(create_app(repository_settings(repository))) as client:
        state = client.app.state.service  # type: ignore[attr-defined]
        newest: ServedVersion = state.repository.resolve("fashion", "2")
        held = HeldForward(newest.predictor)
        newest.predictor.predict_scored = held  # type: ignore[method-assign]
        (repository / "fashion" / "2" / "model.pth").unlink()
        with ThreadPoolExecutor(2) as pool:
            try:
                in_flight = pool.submit(predict, client)
                assert held.started.wait(30)
                loading = pool.submit(client.post, "/v2/repository/models/fashion/load", headers=ADMIN)
                wait_for(lambda: "2" not in state.repository.models["fashion"])
                # Switched: a new request goes to version 1 while version 2 still holds the first.
                assert predict(client)["model_version"] == "1"
                assert newest.in_use == 1 and not loading.done()
            finally:
                held.release.set()
            assert in_flight.result()["model_version"] == "2"
            assert loading.result().json() == {"name": "fashion", "versions": ["1"]}
        assert newest.in_use == 0 and not newest.engine.ready
