"""The V2 routes driven by NVIDIA's own client, ``tritonclient[http]``, against a real server
on the shipped model and real Fashion-MNIST test images: every way the client can send
and receive tensors gives the probabilities /predict gives for the same image.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from bench.uploads import CONTENT_TYPE, multipart
from models.metadata import FASHION_MNIST_CLASSES
from tests.app.conftest import SHIPPED_MODEL
from tests.app.live_server import live_server

httpclient = pytest.importorskip(
    "tritonclient.http", reason="the tritonclient[http] package is not installed"
)
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "fashion-mnist"
N = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not SHIPPED_MODEL.is_file():
        pytest.skip(f"{SHIPPED_MODEL} is not there yet: run python -m training")
    with live_server(SHIPPED_MODEL, tmp_path_factory.mktemp("v2-server") / "uvicorn.log") as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[object]:
    triton = httpclient.InferenceServerClient(server.removeprefix("http://"))
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def images(real_test_images: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    return real_test_images[0][:N].numpy()


@pytest.fixture(scope="module")
def pngs(images: np.ndarray) -> list[bytes]:
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


@pytest.fixture(scope="module")
def expected(server: str, pngs: list[bytes]) -> np.ndarray:
    """/predict's ten probabilities for each PNG, in class order."""
    rows = []
    for png in pngs:
        request = urllib.request.Request(
            f"{server}/predict?top_k=10", data=multipart(png), headers={"Content-Type": CONTENT_TYPE}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            answer = json.load(response)
        row = np.zeros(10)
        for item in answer["top_k"]:
            row[item["class_index"]] = item["probability"]
        rows.append(row)
    return np.array(rows)


def test_health_and_metadata_through_the_triton_client(client: object, server: str) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("mnist")
    metadata = client.get_server_metadata()
    assert "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata(MODEL)
    assert [i["name"] for i in model["inputs"]] == ["image", "pixels"]
    names = ["probabilities", "class_index", "class_name", "ood_score", "out_of_distribution"]
    assert [o["name"] for o in model["outputs"]] == names  # the shipped model has a score
    version = model["versions"][0]
    assert client.get_model_metadata(MODEL, model_version=version)["versions"] == [version]
    assert client.is_model_ready(MODEL, model_version=version)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_images_as_bytes_give_predict_s_probabilities(
    client: object, pngs: list[bytes], expected: np.ndarray, binary: bool
) -> None:
    # JSON carries text only: there, each image file goes base64-encoded.
    items = pngs if binary else [base64.b64encode(png) for png in pngs]
    tensor = httpclient.InferInput("image", [N], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_), binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "class_name")
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    names = [name.decode() if isinstance(name, bytes) else name for name in result.as_numpy("class_name")]
    assert names == [FASHION_MNIST_CLASSES[i] for i in expected.argmax(axis=1)]
    assert result.get_response()["id"] == "r-1"
    assert result.as_numpy("class_index") is None  # not asked for


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_pixels_give_predict_s_probabilities_with_every_output(
    client: object, images: np.ndarray, expected: np.ndarray, datatype: str, binary: bool
) -> None:
    values = images if datatype == "UINT8" else images.astype(np.float32) / 255
    tensor = httpclient.InferInput("pixels", [N, 1, 28, 28], datatype)
    tensor.set_data_from_numpy(values.reshape(N, 1, 28, 28), binary_data=binary)
    result = client.infer(MODEL, [tensor])  # no outputs named: all of them
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("class_index"), probabilities.argmax(axis=1))
    assert result.as_numpy("class_name").shape == (N,)


def test_errors_reach_the_client_with_our_detail(client: object, images: np.ndarray) -> None:
    tensor = httpclient.InferInput("pixels", [1, 27, 28], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 27, 28), dtype=np.uint8))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [tensor])
    assert "pixels: expected shape [N, 28, 28] or [N, 1, 28, 28], got [1, 27, 28]" in error.value.message()
    assert error.value.status() == "400"
    good = httpclient.InferInput("pixels", [1, 28, 28], "UINT8")
    good.set_data_from_numpy(images[:1])
    with pytest.raises(InferenceServerException) as error:
        client.infer("mnist", [good])
    assert error.value.status() == "404"
    assert "this server serves 'fashion-mnist'" in error.value.message()
    broken = httpclient.InferInput("image", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [broken])
    assert error.value.message().startswith("image[0]: ")
