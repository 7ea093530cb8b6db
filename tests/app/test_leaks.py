"""No answer tells how the server is built: no traceback, no server path, no library version.

Every error path the app has is triggered in-process, and every body and header is searched.
"""

import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import fastapi
import httpx
import PIL
import pydantic
import pytest
import starlette
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.images import GARBAGE, PDF, encode, fashion_like, png_bomb, png_bytes
from tests.conftest import REPO

VERSIONS = {
    "torch": torch.__version__.split("+")[0],
    "fastapi": fastapi.__version__,
    "starlette": starlette.__version__,
    "pydantic": pydantic.VERSION,
    "pillow": PIL.__version__,
    "python": ".".join(map(str, sys.version_info[:3])),
}
SERVER_PATHS = {
    "the repository": str(REPO),
    "site-packages": sysconfig.get_paths()["purelib"],
    "the environment": sys.prefix,
}
LIMIT = 4000
MULTIPART = {"headers": {"content-type": "multipart/form-data; boundary=b"}}


def leaks(response: httpx.Response, *secret_paths: Path) -> list[str]:
    """What ``response`` gives away, in words; empty when nothing."""
    text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    found = ["a traceback"] if "Traceback" in text or 'File "' in text else []
    paths = {**SERVER_PATHS, **{f"the path {p}": str(p) for p in secret_paths}}
    found += [name for name, path in paths.items() if path in text]
    for name, version in VERSIONS.items():
        # A version alone, not inside a longer number (0.136268 is a probability, not 13.0).
        if re.search(rf"(?<![\d.]){re.escape(version)}(?![\d])", text):
            found.append(f"{name} {version}")
    return found


def test_the_leak_detector_finds_what_it_looks_for(tiny_checkpoint: Path) -> None:
    response = httpx.Response(
        500,
        text=f'Traceback: File "{REPO}/app/x.py", torch {torch.__version__}',
        headers={"x-served-by": f"Python/{VERSIONS['python']}", "x-model": str(tiny_checkpoint)},
    )
    found = leaks(response, tiny_checkpoint.parent)
    assert found == ["a traceback", "the repository", f"the path {tiny_checkpoint.parent}",
                     f"torch {VERSIONS['torch']}", f"python {VERSIONS['python']}"]  # fmt: skip
    assert (
        leaks(httpx.Response(200, json={"probability": float("0." + VERSIONS["torch"].replace(".", ""))}))
        == []
    )


def upload(data: bytes, name: str = "item.png") -> dict[str, Any]:
    return {"file": (name, data, "image/png")}


def batch(*files: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]


# (what, method, path, request keywords, expected status)
ERROR_PATHS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("unknown path", "GET", "/nowhere/../../etc/passwd", {}, 404),
    ("static file that is not there", "GET", "/static/missing.js", {}, 404),
    ("wrong method", "GET", "/predict", {}, 405),
    ("wrong method on /model", "DELETE", "/model", {}, 405),
    ("upload over the limit", "POST", "/predict", {"files": upload(b"\0" * LIMIT)}, 413),
    ("chunked, over the limit", "POST", "/predict", {"content": iter([b"x" * LIMIT] * 2), **MULTIPART}, 413),
    ("PDF", "POST", "/predict", {"files": upload(PDF)}, 415),
    ("empty file", "POST", "/predict", {"files": upload(b"")}, 400),
    ("garbage", "POST", "/predict", {"files": upload(GARBAGE)}, 400),
    ("truncated PNG", "POST", "/predict", {"files": upload(png_bytes()[:60])}, 400),
    ("decompression bomb", "POST", "/predict", {"files": upload(png_bomb(100_000, 100_000, rows=4))}, 400),
    ("over the pixel limit", "POST", "/predict", {"files": upload(encode(fashion_like(200)))}, 400),
    ("bad file in a batch", "POST", "/predict/batch", {"files": batch(png_bytes(), GARBAGE)}, 400),
    ("too many files", "POST", "/predict/batch", {"files": batch(*[png_bytes()] * 3)}, 400),
    ("no boundary", "POST", "/predict", {"content": b"x", "headers": {"content-type": "multipart/form-data"}},
     400),
    ("top_k too big", "POST", "/predict?top_k=11", {"files": upload(png_bytes())}, 422),
    ("top_k not a number", "POST", "/predict?top_k=%00abc", {"files": upload(png_bytes())}, 422),
    ("invert not a mode", "POST", "/predict?invert=/etc/passwd", {"files": upload(png_bytes())}, 422),
    ("include_input not a bool", "POST", "/predict?include_input=maybe", {"files": upload(png_bytes())}, 422),
    ("no file field", "POST", "/predict", {"files": {"image": ("a.png", png_bytes(), "image/png")}}, 422),
    ("a text field, not a file", "POST", "/predict", {"data": {"file": "not a file"}}, 422),
    ("two files", "POST", "/predict", {"files": [("file", ("a.png", png_bytes()))] * 2}, 422),
    ("no body at all", "POST", "/predict", {}, 422),
    ("JSON instead of a form", "POST", "/predict", {"json": {"file": "x"}}, 422),
]  # fmt: skip


@pytest.fixture
def strict_client(tiny_checkpoint: Path) -> Any:
    settings = Settings(
        model_path=tiny_checkpoint, device="cpu", max_upload_bytes=LIMIT, max_image_pixels=100 * 100,
        max_batch_files=2, max_queue=2, inference_process=False,
    )  # fmt: skip
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def test_no_error_answer_leaks_anything(strict_client: Any, tiny_checkpoint: Path) -> None:
    _, client = strict_client
    problems = []
    for what, method, path, kwargs, status in ERROR_PATHS:
        response = client.request(method, path, **kwargs)
        if response.status_code != status:
            problems.append(f"{what}: status {response.status_code}, expected {status}")
        elif not isinstance(response.json().get("detail"), str):
            problems.append(f"{what}: {response.text[:200]} is not {{'detail': '...'}}")
        problems += [f"{what}: {leak}" for leak in leaks(response, tiny_checkpoint.parent)]
    assert problems == []


def test_the_documents_and_the_model_description_leak_nothing(
    client: TestClient, tiny_checkpoint: Path
) -> None:
    for path in ("/openapi.json", "/model", "/health", "/health/live", "/classes", "/metrics", "/docs", "/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert leaks(response, tiny_checkpoint.parent) == [], path
    assert tiny_checkpoint.name not in client.get("/model").text


@pytest.mark.parametrize("where", ["predict_scored", "decode"])
def test_an_internal_error_is_a_bare_500_whatever_its_message(
    strict_client: Any, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    app, client = strict_client
    secret = (
        f"failed in {sysconfig.get_paths()['purelib']}/torch/nn.py (torch {torch.__version__}) for {REPO}"
    )

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(secret)

    # Decoding and the forward pass run in the inference worker: both errors must reach the route.
    if where == "decode":
        monkeypatch.setattr("app.inference.worker.decode_upload", broken)
    else:
        monkeypatch.setattr(app.state.service.predictor, where, broken)
    for response in (
        client.post("/predict", files=upload(png_bytes())),
        client.post("/predict/batch", files=batch(png_bytes())),
    ):
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert leaks(response, tiny_checkpoint.parent) == []
    assert client.get("/health").status_code == 200


def test_a_timeout_leaks_nothing(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(
        Settings(model_path=tiny_checkpoint, device="cpu", request_timeout_s=0.05, inference_process=False)
    )
    with TestClient(app) as client:
        predictor = app.state.service.predictor
        slow_forward = predictor.predict_scored

        def slow(*args: Any) -> Any:
            time.sleep(0.3)
            return slow_forward(*args)

        monkeypatch.setattr(predictor, "predict_scored", slow)
        response = client.post("/predict", files=upload(png_bytes()))
    assert response.status_code == 504
    assert leaks(response, tiny_checkpoint.parent) == []


def test_refusals_before_the_model_and_without_a_key_leak_nothing(tiny_checkpoint: Path) -> None:
    not_started = TestClient(create_app(Settings(model_path=tiny_checkpoint, device="cpu")))  # no lifespan
    response = not_started.post("/predict", files=upload(png_bytes()))
    assert response.status_code == 503
    assert leaks(response, tiny_checkpoint.parent) == []
    locked = Settings(model_path=tiny_checkpoint, device="cpu", api_key="k")
    with TestClient(create_app(locked)) as client:
        for response in (client.get("/model"), client.get("/metrics"), client.post("/predict")):
            assert response.status_code == 401
            assert leaks(response, tiny_checkpoint.parent) == []
