from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes

KEY = "s3cret-key"
PROTECTED = [("POST", "/predict"), ("POST", "/predict/batch"), ("GET", "/model"), ("GET", "/metrics")]
OPEN = ["/health", "/health/live", "/classes", "/"]


@pytest.fixture
def locked(tiny_checkpoint: Path) -> Iterator[TestClient]:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", api_key=KEY)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        yield client


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    if method == "GET":
        return client.get(path, headers=headers)
    field = "files" if path.endswith("batch") else "file"
    return client.post(path, files={field: ("item.png", png_bytes(), "image/png")}, headers=headers)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_routes_refuse_requests_without_the_key(locked: TestClient, method: str, path: str) -> None:
    response = call(locked, method, path)
    assert response.status_code == 401
    assert response.json()["detail"].startswith("missing or invalid API key")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"authorization": f"bearer {KEY}"}]
)
def test_the_key_opens_them(locked: TestClient, method: str, path: str, headers: dict[str, str]) -> None:
    assert call(locked, method, path, headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer wrong"}, {"X-API-Key": KEY + "x"}, {"Authorization": KEY}, {"X-API-Key": ""}],
)
def test_a_wrong_key_is_refused(locked: TestClient, headers: dict[str, str]) -> None:
    assert call(locked, "POST", "/predict", headers).status_code == 401


@pytest.mark.parametrize("path", OPEN)
def test_health_classes_and_the_page_stay_open(locked: TestClient, path: str) -> None:
    assert locked.get(path).status_code == 200


def test_without_a_key_setting_everything_is_open(client: TestClient) -> None:
    for method, path in PROTECTED:
        assert call(client, method, path).status_code == 200, path


def test_the_key_never_shows_in_settings_repr() -> None:
    settings = Settings(api_key=KEY)  # type: ignore[arg-type]
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
