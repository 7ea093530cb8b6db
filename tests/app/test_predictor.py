"""The predictor without HTTP: load, preprocess, predict, postprocess."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from app.prediction import DeviceError, ItemError
from app.predictor import Predictor, resolve_device
from models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.images import EmptyImageError, decode_image
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model, count_parameters
from models.preprocessing import normalize, preprocess
from tests.app.images import GARBAGE, encode, png_bytes, product_photo
from tests.conftest import TINY_CNN_ARGS


@pytest.fixture
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.load(tiny_checkpoint, device="cpu")


def test_load_puts_the_model_in_eval_mode_on_the_device_with_batch_norm_folded(predictor: Predictor) -> None:
    assert predictor.device == torch.device("cpu")
    assert not predictor.model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules())
    assert predictor.classes == list(FASHION_MNIST_CLASSES)
    assert predictor.version == predictor.loaded.sha256[:12]
    # The checkpoint's own count, not the smaller one of the folded network.
    assert predictor.num_parameters == count_parameters(build_model("cnn", **TINY_CNN_ARGS))


def test_folding_batch_norm_keeps_the_outputs(trained_checkpoint: Path) -> None:
    x = torch.randn(16, 1, 28, 28)
    with torch.inference_mode():
        unfused = load_checkpoint(trained_checkpoint).model(x).softmax(1)
    fused = Predictor.load(trained_checkpoint, device="cpu").predict(x)
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-4)


def test_a_bare_tutorial_state_dict_without_fusion_also_serves(tmp_path: Path) -> None:
    path = tmp_path / "tutorial.pth"
    torch.save(build_model("mlp").state_dict(), path)
    predictor = Predictor.load(path, device="cpu")
    assert predictor.loaded.arch == "mlp"
    assert predictor.classify(png_bytes()).top[0].name in FASHION_MNIST_CLASSES


def test_a_28x28_png_becomes_exactly_the_offline_tensor(predictor: Predictor) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    pixels[[0, -1], :], pixels[:, [0, -1]] = 0, 0  # dark border: auto does not invert
    item = predictor.preprocess(encode(pixels))
    spec = predictor.loaded.input_spec
    assert torch.equal(item.tensor, normalize(torch.from_numpy(pixels), spec.mean, spec.std).unsqueeze(0))
    assert not item.steps.inverted
    assert item.steps.background is None and item.steps.box is None  # taken as it is


def test_decode_gives_the_raw_pixels_and_predict_batch_normalises_them_once_per_batch(
    predictor: Predictor,
) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(4)]
    for pixels in images:
        pixels[[0, -1], :], pixels[:, [0, -1]] = 0, 0
    decoded = [predictor.decode(encode(pixels)) for pixels in images]
    for item, pixels in zip(decoded, images, strict=True):
        assert item.tensor.dtype == torch.uint8
        assert torch.equal(item.tensor, torch.from_numpy(pixels).unsqueeze(0))
    # The batcher's path (uint8 in, normalised on the inference thread) and the one-at-a-time
    # path (normalised floats in) give the same probabilities.
    from_pixels = predictor.predict_batch([item.tensor for item in decoded])
    from_floats = predictor.predict_batch([predictor.preprocess(encode(p)).tensor for p in images])
    for a, b in zip(from_pixels, from_floats, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_predict_batch_gives_one_probability_vector_per_item_in_order(predictor: Predictor) -> None:
    tensors = [torch.randn(1, 28, 28) for _ in range(5)]
    probabilities = predictor.predict_batch(tensors)
    assert len(probabilities) == 5
    for tensor, probs in zip(tensors, probabilities, strict=True):
        assert probs.shape == (10,)
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(probs, predictor.predict(tensor.unsqueeze(0))[0], atol=1e-6, rtol=1e-5)
    assert predictor.predict_batch([]) == []


def test_the_predictor_follows_the_checkpoints_flip_average_unless_told_otherwise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", **TINY_CNN_ARGS)
    path = tmp_path / "flip.pth"
    classes, spec = FASHION_MNIST_CLASSES, InputSpec()
    save_checkpoint(make_checkpoint(model, "cnn", TINY_CNN_ARGS, classes, spec, flip_average=True), path)
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    following = Predictor.load(path, device="cpu")
    plain = Predictor.load(path, device="cpu", flip_average=False)
    assert following.flip_average is True and plain.flip_average is False
    mirrored = plain.predict(x.flip(-1))
    torch.testing.assert_close(following.predict(x), (plain.predict(x) + mirrored) / 2)
    assert Predictor.load(path, device="cpu", flip_average=None).flip_average is True


def test_a_checkpoint_without_flip_average_predicts_plainly_unless_asked(tiny_checkpoint: Path) -> None:
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    plain = Predictor.load(tiny_checkpoint, device="cpu")
    asked = Predictor.load(tiny_checkpoint, device="cpu", flip_average=True)
    assert plain.flip_average is False
    torch.testing.assert_close(asked.predict(x), (plain.predict(x) + plain.predict(x.flip(-1))) / 2)


def test_postprocess_lists_the_top_k_best_first_and_never_more_than_the_classes(predictor: Predictor) -> None:
    probs = torch.tensor([0.1, 0.3, 0.02, 0.2, 0.04, 0.05, 0.06, 0.07, 0.08, 0.08])
    top = predictor.postprocess(probs, 3)
    assert [(s.index, s.name) for s in top] == [(1, "Trouser"), (3, "Dress"), (0, "T-shirt/top")]
    assert top[0].probability == pytest.approx(0.3)
    assert len(predictor.postprocess(probs, 10)) == 10
    assert len(predictor.postprocess(probs, 50)) == 10


def test_classify_reports_preprocessing(predictor: Predictor) -> None:
    prediction = predictor.classify(encode(product_photo(300, 400), "JPEG"), top_k=2)
    assert len(prediction.top) == 2
    assert prediction.steps.original_size == (300, 400)
    assert prediction.steps.inverted is True
    assert predictor.classify(encode(product_photo()), invert="false").steps.inverted is False


def test_a_big_jpeg_reports_the_size_uploaded_not_the_size_decoded(predictor: Predictor) -> None:
    prediction = predictor.classify(encode(product_photo(2000, 1600), "JPEG"))
    assert prediction.steps.original_size == (2000, 1600)  # decoded at 1/8 scale, 250x200
    assert prediction.steps.inverted is True
    # The item's box at the upload's scale: columns 500-1500, rows 200-1400.
    assert prediction.steps.box is not None
    assert np.allclose(prediction.steps.box, (500, 200, 1500, 1400), atol=8)


@pytest.mark.parametrize("pixels", [product_photo(300, 400), product_photo(28, 28)], ids=["photo", "28x28"])
def test_keep_image_returns_the_28x28_grayscale_the_tensor_was_made_from(
    predictor: Predictor, pixels: np.ndarray
) -> None:
    data = encode(pixels)
    spec = predictor.loaded.input_spec
    offline = preprocess(decode_image(data), spec.mean, spec.std)
    item = predictor.preprocess(data, keep_image=True)
    assert torch.equal(item.tensor, offline.tensor)  # the same steps as the shared preprocessing
    assert item.steps == offline.steps
    assert item.image is not None and (item.image.mode, item.image.size) == ("L", (28, 28))
    expected = normalize(torch.from_numpy(np.asarray(item.image).copy()), spec.mean, spec.std)
    assert torch.equal(item.tensor[0], expected)
    assert predictor.preprocess(data).image is None
    assert predictor.classify(data, keep_image=True).input_image == item.image
    assert predictor.classify(data).input_image is None


def test_classify_many_names_the_first_bad_item(predictor: Predictor) -> None:
    assert len(predictor.classify_many([png_bytes(), png_bytes()])) == 2
    with pytest.raises(ItemError) as caught:
        predictor.classify_many([png_bytes(), b"", GARBAGE])
    assert caught.value.index == 1
    assert isinstance(caught.value.error, EmptyImageError)


def test_a_model_for_another_input_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.pth"
    spec = InputSpec(height=32, width=32, channels=3, mean=(0.5,), std=(0.5,))
    model = build_model("cnn", **TINY_CNN_ARGS)
    save_checkpoint(make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, spec), path)
    with pytest.raises(CheckpointError, match=r"rgb.pth: the model expects 3x32x32 input"):
        Predictor.load(path, device="cpu")


def test_a_class_list_that_does_not_match_the_outputs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "five.pth"
    model = build_model("cnn", **TINY_CNN_ARGS)  # ten outputs
    save_checkpoint(
        make_checkpoint(model, "cnn", TINY_CNN_ARGS, ["a", "b", "c", "d", "e"], InputSpec()), path
    )
    with pytest.raises(
        CheckpointError, match=r"five\.pth: the network gives 10 outputs but the checkpoint names 5"
    ):
        Predictor.load(path, device="cpu")


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="'cuda:0': CUDA is not available"):
        resolve_device("cuda:0")
