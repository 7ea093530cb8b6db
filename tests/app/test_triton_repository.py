"""The model repository calls driven by NVIDIA's own client, ``tritonclient[http]``, against a
real server on a repository holding copies of the shipped model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import SHIPPED_MODEL
from tests.app.live_server import live_server

httpclient = pytest.importorskip(
    "tritonclient.http", reason="the tritonclient[http] package is not installed"
)
from tritonclient.utils import InferenceServerException  # noqa: E402

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not there yet: run python -m training")
    root = tmp_path_factory.mktemp("repository")
    for name in ("fashion", "canary"):
        (root / name / "1").mkdir(parents=True)
        shutil.copyfile(SHIPPED_MODEL, root / name / "1" / "model.pth")
    return root


@pytest.fixture(scope="module")
def client(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    log = tmp_path_factory.mktemp("repository-server") / "uvicorn.log"
    settings = {"model_repository": str(repository), "default_model": "fashion", "admin_key": "admin-secret"}
    with live_server(None, log, **settings) as url:
        triton = httpclient.InferenceServerClient(url.removeprefix("http://"))
        yield triton
        triton.close()


def infer_version(client: object, name: str) -> str:
    pixels = httpclient.InferInput("pixels", [1, 28, 28], "UINT8")
    pixels.set_data_from_numpy(np.zeros((1, 28, 28), dtype=np.uint8))
    result = client.infer(name, [pixels])  # type: ignore[attr-defined]
    return str(result.get_response()["model_version"])


def test_index_load_and_unload(client: object, repository: Path) -> None:
    index = client.get_model_repository_index(headers=ADMIN)  # type: ignore[attr-defined]
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("canary", "1", "READY"),
        ("fashion", "1", "READY"),
    ]
    (repository / "canary" / "2").mkdir()
    shutil.copyfile(SHIPPED_MODEL, repository / "canary" / "2" / "model.pth")
    client.load_model("canary", headers=ADMIN)  # type: ignore[attr-defined]
    assert client.is_model_ready("canary", "2")  # type: ignore[attr-defined]
    assert infer_version(client, "canary") == "2"

    client.unload_model("canary", headers=ADMIN)  # type: ignore[attr-defined]
    assert not client.is_model_ready("canary")  # type: ignore[attr-defined]
    index = client.get_model_repository_index(headers=ADMIN)  # type: ignore[attr-defined]
    assert {"name": "canary", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    client.load_model("canary", headers=ADMIN)  # type: ignore[attr-defined]
    assert infer_version(client, "canary") == "2"
    assert infer_version(client, "fashion") == "1"


def test_refusals_reach_the_client_as_errors(client: object, repository: Path) -> None:
    with pytest.raises(InferenceServerException, match="admin key"):
        client.load_model("canary")  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException, match="no model 'nothing'"):
        client.load_model("nothing", headers=ADMIN)  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException, match="default model"):
        client.unload_model("fashion", headers=ADMIN)  # type: ignore[attr-defined]
    (repository / "fashion" / "2").mkdir()
    (repository / "fashion" / "2" / "model.pth").write_bytes(SHIPPED_MODEL.read_bytes()[:5000])
    try:
        with pytest.raises(InferenceServerException, match="cannot load fashion version 2"):
            client.load_model("fashion", headers=ADMIN)  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(repository / "fashion" / "2")
    assert infer_version(client, "fashion") == "1"
