"""POST /predict and /predict/batch through the real app and lifespan."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from models.images import decode_image, to_model_image
from tests.app.images import GARBAGE, PDF, SVG, TEXT, encode, fashion_like, png_bomb, png_bytes, product_photo


def upload(data: bytes, name: str = "item.png", content_type: str = "image/png") -> dict[str, tuple]:
    return {"file": (name, data, content_type)}


def batch(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def test_predict_returns_the_class_the_top_k_and_the_model_version(client: TestClient) -> None:
    response = client.post("/predict", files=upload(png_bytes()))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "class_name",
        "class_index",
        "confidence",
        "top_k",
        "preprocessing",
        "model_name",
        "model_version",
    }
    assert body["model_name"] == "fashion-mnist"
    classes = client.get("/classes").json()["classes"]
    assert body["class_name"] == classes[body["class_index"]]
    assert len(body["top_k"]) == 3
    assert body["top_k"][0] == {
        "class_name": body["class_name"],
        "class_index": body["class_index"],
        "probability": body["confidence"],
    }
    probabilities = [item["probability"] for item in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert body["preprocessing"] == {"original_size": [28, 28], "inverted": False}
    assert body["model_version"] == client.get("/model").json()["version"]


@pytest.mark.parametrize("top_k", [1, 10])
def test_top_k_sets_how_many_classes_are_listed(client: TestClient, top_k: int) -> None:
    response = client.post("/predict", params={"top_k": top_k}, files=upload(png_bytes()))
    assert response.status_code == 200
    assert len(response.json()["top_k"]) == top_k


def test_a_product_photo_on_white_is_inverted_and_says_so(client: TestClient) -> None:
    response = client.post("/predict", files=upload(encode(product_photo(300, 400), "JPEG"), "shirt.jpg"))
    assert response.status_code == 200
    steps = response.json()["preprocessing"]
    assert (steps["original_size"], steps["inverted"]) == ([300, 400], True)
    # The white taken away, and the item's box (columns 75-225, rows 50-350) in the upload's pixels.
    assert 250 <= steps["background"] <= 255
    assert np.allclose(steps["box"], [75, 50, 225, 350], atol=2)
    forced = client.post("/predict", params={"invert": "false"}, files=upload(encode(product_photo())))
    assert forced.json()["preprocessing"]["inverted"] is False
    inverted = client.post("/predict", params={"invert": "true"}, files=upload(png_bytes()))
    assert inverted.json()["preprocessing"]["inverted"] is True


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "the file is empty"),
        (GARBAGE, "the file is not a decodable image"),
        (png_bytes()[:60], "the image is truncated or damaged"),
        (png_bomb(5000, 5000), "the image has 5000x5000 pixels, more than the limit of 16000000"),
        (png_bomb(100_000, 100_000, rows=4), "the image has more than 16000000 pixels"),
    ],
    ids=["empty", "garbage", "truncated", "bomb", "huge-header"],
)
def test_unusable_images_are_a_400(client: TestClient, data: bytes, detail: str) -> None:
    response = client.post("/predict", files=upload(data))
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize(("data", "kind"), [(PDF, "PDF"), (SVG, "SVG"), (TEXT, "text")])
def test_known_non_images_are_a_415(client: TestClient, data: bytes, kind: str) -> None:
    response = client.post("/predict", files=upload(data, "upload.bin"))
    assert response.status_code == 415
    assert response.json()["detail"].startswith(f"the file is {kind}, not an image; send a PNG, JPEG")


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ({"top_k": 11}, "top_k: Input should be less than or equal to 10"),
        ({"top_k": "three"}, "top_k: Input should be a valid integer"),
        ({"invert": "maybe"}, "invert: Input should be 'auto', 'true' or 'false'"),
    ],
)
def test_bad_parameters_are_a_422_with_one_readable_detail(
    client: TestClient, params: dict[str, object], detail: str
) -> None:
    response = client.post("/predict", params=params, files=upload(png_bytes()))
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_a_missing_file_field_is_a_422(client: TestClient) -> None:
    response = client.post("/predict", files={"image": ("item.png", png_bytes(), "image/png")})
    assert response.status_code == 422
    assert response.json() == {"detail": "file: Field required"}
    assert client.post("/predict").status_code == 422


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", None])
def test_a_raw_image_body_is_refused_showing_the_multipart_form(
    client: TestClient, content_type: str | None
) -> None:
    # curl --data-binary @x.png -H 'Content-Type: image/png': the body is the image itself.
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=png_bytes(), headers=headers)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "file: Field required; send the image as a multipart/form-data field named file, "
        "as curl -F file=@image.png does"
    }
    response = client.post("/predict/batch", content=png_bytes(), headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"].endswith("as curl -F files=@a.png -F files=@b.png does")


def test_a_raw_body_over_the_upload_limit_is_refused_without_reading_it(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", max_upload_bytes=1000)
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", content=b"\0" * 5000, headers={"content-type": "image/png"})
        # Not a form, so FastAPI never parses it: the same hint, whatever its size.
        assert response.status_code == 422
        assert "as a multipart/form-data field named file" in response.json()["detail"]
        assert client.get("/health").status_code == 200


def test_two_file_parts_or_a_part_without_filename_are_a_422_that_says_so(client: TestClient) -> None:
    two = client.post("/predict", files=[("file", ("a.png", png_bytes())), ("file", ("b.png", png_bytes()))])
    assert two.status_code == 422
    assert two.json() == {"detail": "file: expected one file, got 2; send several to /predict/batch"}
    text = client.post("/predict", data={"file": "a.png"})  # a text field, not a file
    assert text.status_code == 422
    assert text.json() == {
        "detail": "file: expected a file, got a text field; send the image as a file part (with a filename)"
    }


def test_an_upload_over_the_limit_is_a_413(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", max_upload_bytes=5000)
    with TestClient(create_app(settings)) as client:
        small = client.post("/predict", files=upload(png_bytes()))
        assert small.status_code == 200
        big = encode(np.random.default_rng(0).integers(0, 256, (100, 100), dtype=np.uint8))
        assert len(big) > 5000
        response = client.post("/predict", files=upload(big))
        assert response.status_code == 413
        assert response.json() == {"detail": "the upload is larger than 5000 bytes"}
        # Without a Content-Length (a chunked upload) the bytes are counted as they come.
        chunked = client.post(
            "/predict",
            content=iter([b"x" * 4000, b"x" * 4000]),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert chunked.status_code == 413
        assert client.get("/health").status_code == 200  # and the server keeps serving


def test_an_image_over_the_configured_pixel_limit_is_a_400(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", max_image_pixels=100 * 100)
    with TestClient(create_app(settings)) as client:
        assert client.post("/predict", files=upload(encode(fashion_like(100)))).status_code == 200
        response = client.post("/predict", files=upload(encode(fashion_like(101))))
        assert response.status_code == 400
        assert response.json() == {"detail": "the image has 101x101 pixels, more than the limit of 10000"}


def test_no_error_reveals_a_server_path_or_a_traceback(client: TestClient, tiny_checkpoint: Path) -> None:
    for data in (b"", GARBAGE, PDF, png_bytes()[:60], png_bomb(100_000, 100_000, rows=4)):
        text = client.post("/predict", files=upload(data)).text
        assert "Traceback" not in text
        assert str(tiny_checkpoint.parent) not in text
        assert "/site-packages/" not in text


def test_batch_returns_one_prediction_per_file_in_order(client: TestClient) -> None:
    images = [png_bytes(), encode(product_photo(), "JPEG"), encode(fashion_like(56), "WEBP")]
    response = client.post(
        "/predict/batch", params={"top_k": 2}, files=batch(*[(f"{i}.img", d) for i, d in enumerate(images)])
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for data, prediction in zip(images, predictions, strict=True):
        single = client.post("/predict", params={"top_k": 2}, files=upload(data)).json()
        assert prediction["class_index"] == single["class_index"]
        assert prediction["preprocessing"] == single["preprocessing"]
        assert prediction["confidence"] == pytest.approx(single["confidence"], abs=1e-5)
        assert len(prediction["top_k"]) == 2
    assert [p["preprocessing"]["original_size"] for p in predictions] == [[28, 28], [300, 400], [56, 56]]


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        (b"", "files[1] (bad.png): the file is empty"),
        (PDF, "files[1] (bad.png): the file is PDF, not an image; send a PNG"),
        (png_bytes()[:60], "files[1] (bad.png): the image is truncated or damaged"),
    ],
)
def test_one_bad_file_fails_the_batch_naming_its_index_and_filename(
    client: TestClient, bad: bytes, detail: str
) -> None:
    files = batch(("good.png", png_bytes()), ("bad.png", bad), ("also-good.png", png_bytes()))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


def test_too_many_files_and_no_files_are_refused(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", max_batch_files=2)
    with TestClient(create_app(settings)) as client:
        two = client.post("/predict/batch", files=batch(("a.png", png_bytes()), ("b.png", png_bytes())))
        assert two.status_code == 200
        three = batch(("a.png", png_bytes()), ("b.png", png_bytes()), ("c.png", png_bytes()))
        response = client.post("/predict/batch", files=three)
        assert response.status_code == 400
        assert response.json() == {"detail": "too many files: 3; at most 2"}
        empty = client.post("/predict/batch", data={"other": "x"})  # a form without files
        assert empty.status_code == 422
        assert empty.json()["detail"].startswith("files: Field required; send the images as multipart")


def decode_data_url(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url.removeprefix(prefix), validate=True)))


def test_include_input_returns_the_28x28_grayscale_the_model_saw(client: TestClient) -> None:
    pixels = fashion_like()
    response = client.post("/predict", params={"include_input": "true"}, files=upload(png_bytes(pixels)))
    assert response.status_code == 200
    image = decode_data_url(response.json()["input_image"])
    assert (image.mode, image.size) == ("L", (28, 28))
    assert np.array_equal(np.asarray(image), pixels)  # a 28x28 grayscale is fed as it is

    photo = encode(product_photo(300, 400), "JPEG")
    body = client.post("/predict", params={"include_input": "true"}, files=upload(photo)).json()
    expected, inverted = to_model_image(decode_image(photo))  # decoded as the server does: at half scale
    assert inverted and body["preprocessing"]["inverted"]
    assert np.array_equal(np.asarray(decode_data_url(body["input_image"])), np.asarray(expected))


def test_without_include_input_there_is_no_input_image(client: TestClient) -> None:
    assert "input_image" not in client.post("/predict", files=upload(png_bytes())).json()
    off = client.post("/predict", params={"include_input": "false"}, files=upload(png_bytes()))
    assert "input_image" not in off.json()
    many = client.post("/predict/batch", files=batch(("a.png", png_bytes()), ("b.png", png_bytes())))
    assert all("input_image" not in item for item in many.json()["predictions"])
