"""The assembled app: import without side effects, OpenAPI document, docs page."""

import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.lifespan import StartupError
from app.main import create_app
from tests.conftest import REPO

ENDPOINTS = {
    ("post", "/predict"): "PredictionResponse",
    ("post", "/predict/batch"): "BatchPredictionResponse",
    ("get", "/classes"): "ClassesResponse",
    ("get", "/model"): "ModelInfoResponse",
    ("get", "/models"): "ModelListResponse",
    ("get", "/health"): "HealthResponse",
    ("get", "/health/live"): "LivenessResponse",
}

MODEL = "/v2/models/{model_name}"
VERSION = MODEL + "/versions/{model_version}"
V2_ROUTES = (
    {("get", "/v2"), ("get", "/v2/health/live"), ("get", "/v2/health/ready")}
    | {
        (method, path + suffix)
        for path in (MODEL, VERSION)
        for method, suffix in (("get", ""), ("get", "/ready"), ("post", "/infer"))
    }
    | {("post", "/v2/repository/index")}
    | {("post", f"/v2/repository/models/{{model_name}}/{action}") for action in ("load", "unload")}
)


def test_importing_the_app_loads_nothing() -> None:
    # In a fresh interpreter: importing app.main must not read the model or touch a GPU.
    code = (
        "import app.main, sys; s = app.main.app.state.service; "
        "assert s.predictor is None and s.settings is None and s.status == 'loading'; "
        "assert 'torch' not in sys.modules or not __import__('torch').cuda.is_initialized()"
    )
    env = {**os.environ, "FASHION_MODEL_PATH": "/nonexistent"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


def test_settings_are_read_from_the_environment_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHION_DEVICE", "gpu")
    app = create_app()  # fine: nothing is read yet
    expected = "invalid settings: FASHION_DEVICE: 'gpu' is not a device; valid:"
    with pytest.raises(StartupError, match=expected), TestClient(app):
        pass


def schema_of(document: dict[str, Any], response: dict[str, Any], media: str = "application/json") -> Any:
    ref = response["content"][media]["schema"]["$ref"]
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_openapi_documents_every_endpoint_with_schemas_and_examples(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert {(method, path) for path, ops in paths.items() for method in ops} == set(ENDPOINTS) | V2_ROUTES | {
        ("get", "/metrics")
    }
    for method, path in V2_ROUTES:  # the protocol's own error body
        for status, answer in paths[path][method]["responses"].items():
            # (422: FastAPI documents it for any route with parameters; these have no constraints)
            if status.startswith(("4", "5")) and status != "422" and not path.endswith("/ready"):
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/V2Error"), path
    for (method, path), model in ENDPOINTS.items():
        operation = paths[path][method]
        assert operation["description"], f"{method} {path} has no docstring"
        ok = operation["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/" + model)
        assert schema_of(document, ok).get("examples"), f"{model} has no example"
        for status, error in operation["responses"].items():
            if status == "200":
                continue
            content = error["content"]["application/json"]
            assert "example" in content or "examples" in content, f"{method} {path} {status}: no example"
            assert schema_of(document, error)["title"] in {"ErrorResponse", "HealthProblem"}
    predict = paths["/predict"]["post"]
    assert set(predict["responses"]) == {
        "200",
        "400",
        "401",
        "404",
        "408",
        "413",
        "415",
        "422",
        "500",
        "503",
        "504",
    }
    batch = paths["/predict/batch"]["post"]
    assert set(batch["responses"]) == {"200", "400", "401", "404", "408", "413", "422", "500", "503", "504"}
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    parameters = {p["name"]: p for p in predict["parameters"]}
    assert parameters["top_k"]["schema"]["minimum"] == 1
    assert parameters["top_k"]["schema"]["maximum"] == 10
    assert parameters["invert"]["schema"]["enum"] == ["auto", "true", "false"]
    assert parameters["include_input"]["schema"]["default"] is False
    example = document["components"]["schemas"]["PredictionResponse"]["examples"][0]
    assert example["input_image"].startswith("data:image/png;base64,")
    body = predict["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert document["components"]["schemas"][body]["required"] == ["file"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(media.startswith("text/plain") and "example" in v for media, v in metrics.items())


def test_the_docs_page_is_served(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_head_is_answered_on_every_get_route_without_a_body(client: TestClient) -> None:
    version = client.get("/model").json()["version"]
    names = {"model_name": "fashion-mnist", "model_version": version}
    gets = [path for path, item in client.app.openapi()["paths"].items() if "get" in item]  # type: ignore[attr-defined]
    assert len(gets) >= 10
    for template in [*gets, "/static/app.js"]:
        path = template.format(**names)
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
    assert (
        client.head("/classes").headers["content-length"] == client.get("/classes").headers["content-length"]
    )
    assert client.head("/predict").status_code == 405  # a POST route stays POST


@pytest.mark.parametrize(("method", "path"), [("POST", "/predict/"), ("GET", "/classes/"), ("GET", "/v2/")])
def test_a_trailing_slash_is_a_404_never_a_redirect_to_the_host_header(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
