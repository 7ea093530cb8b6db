"""The Open Inference Protocol routes through the real app and lifespan, on the tiny checkpoint.

Malformed bodies are sent as raw bytes, the way an attacker would: every one is a 400 with
``{"error": ...}`` naming the problem, and the server goes on serving.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ENV_PREFIX, Settings
from tests.app.images import GARBAGE, encode, fashion_like, png_bytes
from tests.conftest import write_tiny_checkpoint

INFER = "/v2/models/fashion-mnist/infer"
BINARY = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the module (the cases here change no state), serving the tiny checkpoint."""
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("v2") / "tiny.pth")
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
            env.delenv(name)
        with TestClient(create_app(Settings(model_path=checkpoint, device="cpu"))) as test_client:
            yield test_client


def pixels_input(pixels: np.ndarray, datatype: str = "UINT8", **extra: Any) -> dict[str, Any]:
    return {"name": "pixels", "datatype": datatype, "shape": list(pixels.shape), **extra}


def binary_body(request: dict[str, Any], *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(request).encode()
    return header + b"".join(tensors), {BINARY: str(len(header))}


def bytes_tensor(*items: bytes) -> bytes:
    """Triton's BYTES layout: each element's 4-byte little-endian length, then the element."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def predict_probabilities(client: TestClient, png: bytes) -> list[float]:
    """All ten probabilities /predict gives for ``png``, in class order."""
    top = client.post("/predict", params={"top_k": 10}, files={"file": ("x.png", png, "image/png")}).json()
    probabilities = [0.0] * 10
    for item in top["top_k"]:
        probabilities[item["class_index"]] = item["probability"]
    return probabilities


def output(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in body["outputs"] if o["name"] == name)


def test_server_metadata_lists_the_binary_extension(client: TestClient) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    assert response.json() == {
        "name": "fashion-mnist-serving",
        "version": response.json()["version"],
        "extensions": ["binary_tensor_data"],
    }


def test_live_and_ready_answer_200_once_the_model_serves(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/fashion-mnist/ready").json() == {"name": "fashion-mnist", "ready": True}


def test_model_metadata_names_the_inputs_outputs_and_the_checkpoint_version(client: TestClient) -> None:
    version = client.get("/model").json()["version"]
    for path in ("/v2/models/fashion-mnist", f"/v2/models/fashion-mnist/versions/{version}"):
        body = client.get(path).json()
        assert body["name"] == "fashion-mnist"
        assert body["versions"] == [version]
        assert body["platform"] == "pytorch"
        assert body["inputs"] == [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]},
        ]
        assert body["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "class_index", "datatype": "INT64", "shape": [-1]},
            {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
        ]


def test_an_unknown_model_or_version_is_a_404_naming_what_is_served(client: TestClient) -> None:
    for path in ("/v2/models/mnist", "/v2/models/mnist/ready", "/v2/models/fashion-mnist/versions/7"):
        response = client.get(path)
        assert response.status_code == 404
        assert "error" in response.json()
    assert client.get("/v2/models/mnist").json() == {
        "error": "unknown model 'mnist'; this server serves 'fashion-mnist'"
    }
    response = client.post("/v2/models/mnist/infer", json={"inputs": []})
    assert response.status_code == 404


def test_the_model_name_comes_from_the_settings(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", model_name="shirts")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v2/models/shirts").json()["name"] == "shirts"
        assert client.get("/v2/models/fashion-mnist").status_code == 404


def test_json_image_infer_gives_predict_s_probabilities_and_echoes_the_id(client: TestClient) -> None:
    png = png_bytes()
    request = {
        "id": "req-7",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(png).decode()]}
        ],
    }
    response = client.post(INFER, json=request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_name"] == "fashion-mnist"
    assert body["model_version"] == client.get("/model").json()["version"]
    probabilities = output(body, "probabilities")
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [1, 10]
    np.testing.assert_allclose(probabilities["data"], predict_probabilities(client, png), atol=1e-6)
    index = int(np.argmax(probabilities["data"]))
    assert output(body, "class_index") == {
        "name": "class_index",
        "datatype": "INT64",
        "shape": [1],
        "data": [index],
    }
    classes = client.get("/classes").json()["classes"]
    assert output(body, "class_name")["data"] == [classes[index]]


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 1, 28, 28)])
def test_uint8_and_fp32_pixels_agree_with_the_same_image_as_a_png(client: TestClient, shape: tuple) -> None:
    images = np.stack([fashion_like(), np.flipud(fashion_like()) // 2])
    expected = [predict_probabilities(client, encode(image)) for image in images]
    for datatype, values in (("UINT8", images), ("FP32", images.astype(np.float32) / 255)):
        request = {
            "inputs": [pixels_input(values.reshape(shape), datatype, data=values.reshape(-1).tolist())]
        }
        body = client.post(INFER, json=request).json()
        np.testing.assert_allclose(output(body, "probabilities")["data"], np.ravel(expected), atol=1e-6)
        # Binary, and nested JSON data, give the same.
        wire = "<u1" if datatype == "UINT8" else "<f4"
        raw = values.astype(wire).tobytes()
        content, headers = binary_body(
            {
                "inputs": [
                    pixels_input(values.reshape(shape), datatype, parameters={"binary_data_size": len(raw)})
                ]
            },
            raw,
        )
        body = client.post(INFER, content=content, headers=headers).json()
        np.testing.assert_allclose(output(body, "probabilities")["data"], np.ravel(expected), atol=1e-6)
        nested = {
            "inputs": [pixels_input(values.reshape(shape), datatype, data=values.reshape(shape).tolist())]
        }
        body = client.post(INFER, json=nested).json()
        np.testing.assert_allclose(output(body, "probabilities")["data"], np.ravel(expected), atol=1e-6)


def test_binary_images_and_binary_outputs_as_asked(client: TestClient) -> None:
    pngs = [png_bytes(), png_bytes(np.fliplr(fashion_like()).copy())]
    tensor = bytes_tensor(*pngs)
    request = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": "class_name", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
        "parameters": {"binary_data_output": False},
    }
    content, headers = binary_body(request, tensor)
    # The Triton client sends no Content-Type: the body is read as it is.
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[BINARY])
    body = json.loads(response.content[:length])
    assert [o["name"] for o in body["outputs"]] == ["class_name", "probabilities"]
    names = output(body, "class_name")
    assert "data" not in names and names["shape"] == [2]
    raw = response.content[length:]
    assert len(raw) == names["parameters"]["binary_data_size"]
    decoded, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        decoded.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    classes = client.get("/classes").json()["classes"]
    expected = [classes[int(np.argmax(predict_probabilities(client, png)))] for png in pngs]
    assert decoded == expected
    assert len(output(body, "probabilities")["data"]) == 20


def test_binary_data_output_returns_every_output_in_binary(client: TestClient) -> None:
    image = fashion_like()
    request = {
        "inputs": [pixels_input(image[None], data=image.reshape(-1).tolist())],
        "parameters": {"binary_data_output": True},
    }
    response = client.post(INFER, json=request)
    length = int(response.headers[BINARY])
    body = json.loads(response.content[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in body["outputs"]]
    assert sizes[:2] == [40, 8]  # ten FP32, one INT64
    raw = response.content[length:]
    assert len(raw) == sum(sizes)
    probabilities = np.frombuffer(raw[:40], dtype="<f4")
    assert int(np.frombuffer(raw[40:48], dtype="<i8")[0]) == int(np.argmax(probabilities))


def test_the_invert_parameter_works_as_on_predict(client: TestClient) -> None:
    png = png_bytes()
    data = [base64.b64encode(png).decode()]
    for invert in ("true", True):
        image = {
            "name": "image",
            "datatype": "BYTES",
            "shape": [1],
            "data": data,
            "parameters": {"invert": invert},
        }
        body = client.post(INFER, json={"inputs": [image]}).json()
        inverted = client.post(
            "/predict", params={"invert": "true", "top_k": 10}, files={"file": ("x.png", png)}
        )
        expected = [0.0] * 10
        for item in inverted.json()["top_k"]:
            expected[item["class_index"]] = item["probability"]
        np.testing.assert_allclose(output(body, "probabilities")["data"], expected, atol=1e-6)


def _image_request(*items: bytes) -> dict[str, Any]:
    data = [base64.b64encode(item).decode() for item in items]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(items)], "data": data}]}


GOOD = fashion_like().reshape(-1).tolist()


def _pixels(**overrides: Any) -> dict[str, Any]:
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": GOOD, **overrides}
    return {"inputs": [tensor]}


JSON_CASES: dict[str, tuple[Any, str]] = {
    "not JSON": (b"{", "invalid inference request"),
    "not an object": (b"[1, 2]", "invalid inference request"),
    "no inputs": ({"inputs": []}, "expected one input"),
    "two inputs": ({"inputs": _pixels()["inputs"] * 2}, "expected one input"),
    "unknown input": (_pixels(name="x"), "unknown input 'x'"),
    "wrong datatype": (_pixels(datatype="INT32"), "expected datatype UINT8 or FP32"),
    "image as UINT8": (
        {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [1]}]},
        "expected datatype BYTES",
    ),
    "wrong shape": (_pixels(shape=[1, 27, 28]), "expected shape [N, 28, 28] or [N, 1, 28, 28]"),
    "no items": (_pixels(shape=[0, 28, 28], data=[]), "0 items; send 1 to 64"),
    "too many items": (_pixels(shape=[65, 28, 28]), "65 items; send 1 to 64"),
    "huge dimension": (_pixels(shape=[2**62, 28, 28]), "items; send 1 to 64"),
    "negative dimension": (_pixels(shape=[-1, 28, 28]), "items; send 1 to 64"),
    "too little data": (_pixels(data=GOOD[:-1]), "data holds 783 values; the shape needs 784"),
    "no data": (_pixels(data=None), "no data"),
    "above 255": (_pixels(data=[256] * 784), "whole numbers from 0 to 255"),
    "negative": (_pixels(data=[-1] * 784), "whole numbers from 0 to 255"),
    "fractions as UINT8": (_pixels(data=[0.5] * 784), "whole numbers from 0 to 255"),
    "strings": (_pixels(data=["1"] * 784), "data must be numbers"),
    "booleans": (_pixels(data=[True] * 784), "data must be numbers"),
    "ragged": (_pixels(data=[[0] * 28] * 27 + [[0] * 27]), "data must be numbers"),
    "FP32 above 1": (_pixels(datatype="FP32", data=[2.0] * 784), "must lie in [0, 1]"),
    "FP32 NaN": (b'{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,28,28],"data":[NaN]}]}', ""),
    "bad base64": (
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]},
        "base64",
    ),
    "fewer strings than the shape": (
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["aGk="]}]},
        "expected 2 base64 strings",
    ),
    "not an image": (_image_request(png_bytes(), GARBAGE), "image[1]: "),
    "unknown output": ({**_pixels(), "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
    "output twice": ({**_pixels(), "outputs": [{"name": "class_name"}] * 2}, "asked for twice"),
    "binary flag not a bool": (
        {**_pixels(), "parameters": {"binary_data_output": "yes"}},
        "expected true or false",
    ),
    "bad invert": (
        {"inputs": [{**_image_request(png_bytes())["inputs"][0], "parameters": {"invert": "maybe"}}]},
        "parameter invert",
    ),
    "many small numbers": (_pixels(shape=[64, 28, 28], data=[0] * (64 * 784 + 2000)), "too many JSON values"),
}


@pytest.mark.parametrize("case", list(JSON_CASES), ids=list(JSON_CASES))
def test_a_malformed_json_request_is_a_400_naming_the_problem(client: TestClient, case: str) -> None:
    request, expected = JSON_CASES[case]
    content = request if isinstance(request, bytes) else json.dumps(request).encode()
    response = client.post(INFER, content=content)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert expected in response.json()["error"]
    assert client.post(INFER, json=_pixels()).status_code == 200  # and it still serves


def _binary_pixels(size: Any, tail: bytes) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "pixels",
        "datatype": "UINT8",
        "shape": [1, 28, 28],
        "parameters": {"binary_data_size": size},
    }
    return binary_body({"inputs": [tensor]}, tail)


def _binary_images(shape: int, tensor: bytes) -> tuple[bytes, dict[str, str]]:
    image = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [shape],
        "parameters": {"binary_data_size": len(tensor)},
    }
    return binary_body({"inputs": [image]}, tensor)


PIXEL_BYTES = bytes(784)
BINARY_CASES: dict[str, tuple[tuple[bytes, dict[str, str]], str]] = {
    "header length beyond the body": ((b"{}", {BINARY: "3"}), "Inference-Header-Content-Length"),
    "header length not a number": ((b"{}", {BINARY: "-1"}), "Inference-Header-Content-Length"),
    "size larger than what follows": (_binary_pixels(785, PIXEL_BYTES), "binary_data_size is 785, but 784"),
    "size smaller than what follows": (_binary_pixels(783, PIXEL_BYTES), "binary_data_size is 783, but 784"),
    "size negative": (_binary_pixels(-784, PIXEL_BYTES), "whole number of bytes"),
    "size a bool": (_binary_pixels(True, PIXEL_BYTES), "whole number of bytes"),
    "size huge": (_binary_pixels(2**62, PIXEL_BYTES), "but 784 bytes follow"),
    "size not the shape's": (_binary_pixels(700, PIXEL_BYTES[:700]), "take 784 bytes"),
    "bytes but no size": (
        binary_body({"inputs": [{**_pixels()["inputs"][0]}]}, b"\x00" * 10),
        "no input has a binary_data_size",
    ),
    "element longer than the data": (_binary_images(1, struct.pack("<I", 2**31) + b"abc"), "runs past"),
    "elements fewer than the shape": (_binary_images(2, bytes_tensor(png_bytes())), "ends before element 1"),
    "bytes left over": (_binary_images(1, bytes_tensor(png_bytes()) + b"xx"), "2 bytes left"),
    "truncated length": (_binary_images(1, b"\x05\x00"), "ends before element 0"),
}


@pytest.mark.parametrize("case", list(BINARY_CASES), ids=list(BINARY_CASES))
def test_malformed_binary_data_is_a_400_never_an_allocation(client: TestClient, case: str) -> None:
    (content, headers), expected = BINARY_CASES[case]
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


def test_limits_and_the_api_key_answer_as_on_predict_with_an_error_body(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", api_key="k", max_upload_bytes=10_000)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        response = client.post(INFER, json=_pixels())
        assert response.status_code == 401
        assert response.json() == {"error": response.json()["error"]}
        assert "API key" in response.json()["error"]
        assert client.get("/v2/models/fashion-mnist").status_code == 401
        assert client.get("/v2/health/ready").status_code == 200  # probes stay open
        auth = {"X-API-Key": "k"}
        assert client.post(INFER, json=_pixels(), headers=auth).status_code == 200
        big = client.post(INFER, content=b"x" * 20_000, headers=auth)
        assert big.status_code == 413
        assert big.json() == {"error": "the upload is larger than 10000 bytes"}
        assert client.get("/v2/nowhere").json() == {"error": "Not Found"}
