"""The repository calls over HTTP: index, load, unload, the admin key, and what each
prediction says about the version that made it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.lifespan import StartupError
from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes
from tests.app.repository.conftest import ADMIN, ADMIN_KEY, add_version, repository_settings

PIXELS = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}]}


def predict(client: TestClient) -> dict[str, object]:
    response = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_version_is_served_and_predict_uses_the_newest(client: TestClient) -> None:
    body = predict(client)
    assert (body["model_name"], body["model_version"]) == ("fashion", "2")
    health = client.get("/health").json()
    assert (health["model_name"], health["model_version"]) == ("fashion", "2")
    older = client.post("/v2/models/fashion/versions/1/infer", json=PIXELS)
    assert older.status_code == 200
    assert (older.json()["model_name"], older.json()["model_version"]) == ("fashion", "1")
    assert client.post("/v2/models/other/infer", json=PIXELS).json()["model_version"] == "1"
    assert client.get("/v2/models/fashion").json()["versions"] == ["1", "2"]
    listing = client.get("/models").json()
    assert listing["default_model"] == "fashion"
    assert [(m["name"], [v["model_version"] for v in m["versions"]]) for m in listing["models"]] == [
        ("fashion", ["1", "2"]),
        ("other", ["1"]),
    ]
    assert client.get("/model").json()["model_version"] == "2"


def test_the_index_lists_each_version(client: TestClient) -> None:
    response = client.post("/v2/repository/index", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == [
        {"name": "fashion", "version": "1", "state": "READY", "reason": ""},
        {"name": "fashion", "version": "2", "state": "READY", "reason": ""},
        {"name": "other", "version": "1", "state": "READY", "reason": ""},
    ]


def test_a_load_serves_new_versions_and_drops_removed_ones(
    client: TestClient, repository: Path, tiny_checkpoint: Path
) -> None:
    add_version(repository, "fashion", 3, tiny_checkpoint)
    response = client.post("/v2/repository/models/fashion/load", headers=ADMIN, json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "fashion", "versions": ["1", "2", "3"]}
    assert predict(client)["model_version"] == "3"
    assert 'model="fashion",model_version="3"' in client.get("/metrics").text

    for version in ("1", "3"):
        (repository / "fashion" / version / "model.pth").unlink()
    response = client.post("/v2/repository/models/fashion/load", headers=ADMIN)
    assert response.json() == {"name": "fashion", "versions": ["2"]}
    assert predict(client)["model_version"] == "2"
    gone = client.post("/v2/models/fashion/versions/1/infer", json=PIXELS)
    assert gone.status_code == 404
    assert gone.json() == {"error": "unknown version '1' of 'fashion'; it has '2'"}
    assert 'model="fashion",model_version="3",parameters' not in client.get("/metrics").text


def test_a_corrupt_version_is_refused_in_one_line_and_changes_nothing(
    client: TestClient, repository: Path, tiny_checkpoint: Path
) -> None:
    add_version(repository, "fashion", 3, tiny_checkpoint)
    (repository / "fashion" / "4").mkdir()
    (repository / "fashion" / "4" / "model.pth").write_bytes(b"PK\x03\x04 not a checkpoint")
    index = client.post("/v2/repository/index", headers=ADMIN).json()
    response = client.post("/v2/repository/models/fashion/load", headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("cannot load fashion version 4: fashion/4/model.pth: ")
    assert "\n" not in error and str(repository) not in error
    assert client.post("/v2/repository/index", headers=ADMIN).json() == index
    assert predict(client)["model_version"] == "2"  # version 3, loaded first, was never served
    assert client.get("/health").status_code == 200


def test_unloading_the_default_model_is_refused(client: TestClient) -> None:
    response = client.post("/v2/repository/models/fashion/unload", headers=ADMIN)
    assert response.status_code == 409
    assert "default model" in response.json()["error"]
    assert predict(client)["model_version"] == "2"


def test_another_model_unloads_and_loads_again(client: TestClient) -> None:
    response = client.post("/v2/repository/models/other/unload", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"name": "other", "versions": []}
    assert client.post("/v2/models/other/infer", json=PIXELS).status_code == 404
    index = client.post("/v2/repository/index", headers=ADMIN).json()
    assert {"name": "other", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    ready = client.post("/v2/repository/index", headers=ADMIN, json={"ready": True}).json()
    assert [entry["name"] for entry in ready] == ["fashion", "fashion"]
    assert client.post("/v2/repository/models/other/unload", headers=ADMIN).status_code == 200  # again: no-op
    assert client.post("/v2/repository/models/other/load", headers=ADMIN).json()["versions"] == ["1"]
    assert client.post("/v2/models/other/infer", json=PIXELS).status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/repository/models/nothing/load", 404),
        ("/v2/repository/models/nothing/unload", 404),
        ("/v2/repository/models/.hidden/load", 400),
        ("/v2/repository/models/-x/unload", 400),
        ("/v2/repository/models/a%2Fb/load", 404),  # decoded to a/b: no such route
        ("/v2/repository/models/" + "a" * 65 + "/load", 400),
    ],
)
def test_unknown_and_invalid_names_never_reach_the_file_system(
    client: TestClient, path: str, status: int
) -> None:
    response = client.post(path, headers=ADMIN)
    assert response.status_code == status
    assert set(response.json()) == {"error"} or set(response.json()) == {"detail"}


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b"{",
        b'{"parameters": 3}',
        b'{"parameters": {"config": "{}"}}',
        b'{"parameters": {"file:1/model.pth": "AA=="}}',
    ],
)
def test_a_bad_load_body_is_a_400(client: TestClient, body: bytes) -> None:
    response = client.post("/v2/repository/models/fashion/load", headers=ADMIN, content=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_without_the_admin_key_the_calls_are_refused(client: TestClient) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/other/unload"):
        missing = client.post(path)
        assert missing.status_code == 401
        assert missing.json()["error"].startswith("missing or invalid admin key")
        assert client.post(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/v2/repository/index", headers={"X-API-Key": ADMIN_KEY}).status_code == 200


def test_without_an_admin_key_configured_the_calls_answer_403(repository: Path) -> None:
    with TestClient(create_app(repository_settings(repository, admin_key=None))) as client:
        response = client.post("/v2/repository/models/other/unload", headers=ADMIN)
        assert response.status_code == 403
        assert response.json() == {
            "error": "the repository calls are disabled: the server has no FASHION_ADMIN_KEY"
        }
        assert client.post("/v2/models/other/infer", json=PIXELS).status_code == 200


def test_the_api_key_does_not_open_the_repository_calls(repository: Path) -> None:
    settings = repository_settings(repository, api_key="user-key")
    with TestClient(create_app(settings)) as client:
        assert client.post("/v2/repository/index", headers={"X-API-Key": "user-key"}).status_code == 401
        assert client.post("/v2/repository/index", headers=ADMIN).status_code == 200
        assert client.post("/v2/models/fashion/infer", json=PIXELS, headers=ADMIN).status_code == 401


def test_a_single_checkpoint_has_no_live_loads(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", admin_key=ADMIN_KEY)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        response = client.post("/v2/repository/models/fashion-mnist/load", headers=ADMIN)
        assert response.status_code == 400
        assert "FASHION_MODEL_REPOSITORY" in response.json()["error"]
        index = client.post("/v2/repository/index", headers=ADMIN).json()
        assert [(e["name"], e["state"]) for e in index] == [("fashion-mnist", "READY")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"default_model": None}, "several models (fashion, other): set FASHION_DEFAULT_MODEL"),
        ({"default_model": "nope"}, "FASHION_DEFAULT_MODEL=nope: no such model"),
        ({"model_path": Path("x.pth")}, "set FASHION_MODEL_REPOSITORY or FASHION_MODEL_PATH, not both"),
    ],
)
def test_start_up_names_the_choices(repository: Path, overrides: dict[str, object], message: str) -> None:
    app = create_app(repository_settings(repository, **overrides))
    with pytest.raises(StartupError, match=re.escape(message)), TestClient(app):
        pass


def test_a_corrupt_version_at_start_up_stops_the_server(repository: Path) -> None:
    (repository / "other" / "1" / "model.pth").write_bytes(b"garbage")
    with (
        pytest.raises(StartupError, match=r"cannot start: .*other/1/model\.pth"),
        TestClient(create_app(repository_settings(repository))),
    ):
        pass


def test_predict_and_the_metadata_routes_may_name_a_model(client: TestClient) -> None:
    upload = {"file": ("a.png", png_bytes(), "image/png")}
    body = client.post("/predict", params={"model": "other"}, files=upload).json()
    assert (body["model_name"], body["model_version"]) == ("other", "1")
    batch = client.post("/predict/batch", params={"model": "other"}, files=[("files", upload["file"])])
    assert batch.json()["predictions"][0]["model_name"] == "other"
    assert client.get("/model", params={"model": "other"}).json()["model_name"] == "other"
    assert client.get("/classes", params={"model": "other"}).status_code == 200
    unknown = client.post("/predict", params={"model": "nothing"}, files=upload)
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown model 'nothing'; this server serves 'fashion', 'other'"}
    assert client.get("/classes", params={"model": "nothing"}).status_code == 404
    assert client.post("/predict", params={"model": "../x"}, files=upload).status_code == 422
