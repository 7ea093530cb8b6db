"""CORS: no cross-origin access unless FASHION_CORS_ORIGINS names the origin."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

SHOP = "https://shop.example.com"
OTHER = "https://evil.example.net"


def preflight(client: TestClient, origin: str) -> dict[str, str]:
    response = client.options(
        "/predict",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    return dict(response.headers)


def test_by_default_no_origin_is_allowed(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": SHOP})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight(client, SHOP)


def test_a_configured_origin_is_allowed_and_another_is_not(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", cors_origins=(SHOP,))
    with TestClient(create_app(settings)) as client:
        allowed = preflight(client, SHOP)
        assert allowed["access-control-allow-origin"] == SHOP
        assert set(allowed["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "x-api-key" in allowed["access-control-allow-headers"].lower()
        assert "authorization" in allowed["access-control-allow-headers"].lower()
        answer = client.get("/classes", headers={"Origin": SHOP}).headers
        assert answer["access-control-allow-origin"] == SHOP
        assert answer["access-control-expose-headers"].lower() == "x-request-id"  # the page may read it

        assert "access-control-allow-origin" not in preflight(client, OTHER)
        assert "access-control-allow-origin" not in client.get("/classes", headers={"Origin": OTHER}).headers


@pytest.mark.parametrize("value", ["https://shop.example.com", f'["{SHOP}", "http://localhost:3000"]'])
def test_origins_from_the_environment_reach_the_app(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FASHION_MODEL_PATH", str(tiny_checkpoint))
    monkeypatch.setenv("FASHION_DEVICE", "cpu")
    monkeypatch.setenv("FASHION_CORS_ORIGINS", value)
    with TestClient(create_app()) as client:  # settings read by the lifespan, as under uvicorn
        assert preflight(client, SHOP)["access-control-allow-origin"] == SHOP
        assert "access-control-allow-origin" not in preflight(client, OTHER)
