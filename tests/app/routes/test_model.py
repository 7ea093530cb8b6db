"""GET /classes and /model."""

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.model import public_metrics, public_train_args
from app.settings import Settings
from models.checkpoint import make_checkpoint, save_checkpoint
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model, count_parameters
from tests.conftest import TINY_CNN_ARGS


def test_classes_come_from_the_checkpoint_in_index_order(tmp_path: Path) -> None:
    classes = ["boot", "bag", "coat", "dress", "shirt", "sock", "hat", "scarf", "belt", "glove"]
    path = tmp_path / "custom.pth"
    save_checkpoint(
        make_checkpoint(build_model("cnn", **TINY_CNN_ARGS), "cnn", TINY_CNN_ARGS, classes, InputSpec()), path
    )
    with TestClient(create_app(Settings(model_path=path, device="cpu"))) as client:
        response = client.get("/classes")
    assert response.status_code == 200
    assert response.json() == {"classes": classes}


def test_model_describes_the_checkpoint(tmp_path: Path) -> None:
    model = build_model("cnn", **TINY_CNN_ARGS)
    train_args = {
        "epochs": 3,
        "lr": 0.1,
        "data_dir": "/home/someone/data/fashion-mnist",
        "cache_dir": "/root/.cache/fashion-mnist-serving",
        "output": "models/model.pth",
        "resume": None,
    }
    metrics = {"test_accuracy": 0.9123, "test_loss": 0.25, "train_seconds": 12.5}
    spec = InputSpec(mean=(0.3,), std=(0.4,))
    path = tmp_path / "described.pth"
    save_checkpoint(
        make_checkpoint(
            model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, spec, metrics=metrics, train_args=train_args
        ),
        path,
    )
    with TestClient(create_app(Settings(model_path=path, device="cpu"))) as client:
        response = client.get("/model")
        health = client.get("/health").json()
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == health["model_version"] == body["sha256"][:12]
    assert body["arch"] == "cnn"
    assert body["model_args"] == TINY_CNN_ARGS
    assert body["num_parameters"] == count_parameters(model)
    assert body["classes"] == list(FASHION_MNIST_CLASSES)
    assert body["input"] == {"height": 28, "width": 28, "channels": 1, "mean": [0.3], "std": [0.4]}
    assert body["metrics"] == metrics
    assert body["train_args"]["epochs"] == 3
    assert body["format_version"] == 1
    assert body["flip_average"] is False  # the checkpoint does not ask for it
    # No software versions: the checkpoint records its torch version, the API does not repeat it.
    assert "torch_version" not in body
    assert body["created_at"]
    assert body["device"] == "cpu"
    # Paths on the training machine are cut to their last part.
    assert body["train_args"]["data_dir"] == "fashion-mnist"
    assert body["train_args"]["cache_dir"] == "fashion-mnist-serving"
    assert body["train_args"]["output"] == "model.pth"
    assert body["train_args"]["resume"] is None
    assert "/root" not in response.text
    assert str(tmp_path) not in response.text


def test_model_says_whether_images_are_averaged_with_their_mirror_and_the_setting_overrides(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flip.pth"
    model = build_model("cnn", **TINY_CNN_ARGS)
    save_checkpoint(
        make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec(), flip_average=True),
        path,
    )
    for override, expected in ((None, True), (False, False)):
        settings = Settings(model_path=path, device="cpu", flip_average=override)
        with TestClient(create_app(settings)) as client:
            assert client.get("/model").json()["flip_average"] is expected


def test_public_train_args_keeps_what_is_not_a_path() -> None:
    args = {"classes": "T-shirt/top,Trouser", "data_dir": "a/b/c", "images": "", "lr": 0.1}
    assert public_train_args(args) == {
        "classes": "T-shirt/top,Trouser",
        "data_dir": "c",
        "images": "",
        "lr": 0.1,
    }


def test_public_metrics_drop_the_training_machines_os_and_python_versions() -> None:
    machine = {"device": "cpu", "platform": "Linux-6.1-x86_64", "cpu_count": 2, "python": "3.11.7"}
    assert public_metrics({"test_accuracy": 0.9, "machine": machine}) == {
        "test_accuracy": 0.9,
        "machine": {"device": "cpu", "cpu_count": 2},
    }
    assert public_metrics({"test_accuracy": 0.9}) == {"test_accuracy": 0.9}
