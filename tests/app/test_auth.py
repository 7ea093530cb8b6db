from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from app.auth import UNAUTHORIZED
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


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY, "Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong", "Authorization": f"Bearer {KEY}"},
        {"X-API-Key": KEY, "Authorization": f"Basic {KEY}"},
    ],
)
def test_a_wrong_key_in_either_header_is_refused_whatever_the_other_says(
    locked: TestClient, headers: dict[str, str]
) -> None:
    for method, path in PROTECTED:
        assert call(locked, method, path, headers).status_code == 401, path


@pytest.mark.parametrize("headers", [{"X-API-Key": f"  {KEY}\t"}, {"Authorization": f"  Bearer   {KEY}  "}])
def test_both_headers_are_trimmed_alike(locked: TestClient, headers: dict[str, str]) -> None:
    assert call(locked, "POST", "/predict", headers).status_code == 200


def test_a_post_without_the_key_is_refused_before_its_body_is_read(locked: TestClient) -> None:
    app = locked.app
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    for path in ("/predict", "/predict/batch", "/v2/models/fashion-mnist/infer"):
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [
                (b"content-type", b"multipart/form-data; boundary=x"),
                (b"content-length", b"2000000"),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "http_version": "1.1",
            "root_path": "",
        }
        anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 401, path
    # Garbage where a form should be is not our parser's problem without the key either.
    garbage = locked.post(
        "/predict", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert garbage.status_code == 401
    assert locked.post("/v2/models/fashion-mnist/infer", content=b"{").json() == {"error": UNAUTHORIZED}
