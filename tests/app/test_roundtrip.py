"""The contract between training and serving: what the training job writes, the app serves."""

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.predictor import Predictor
from app.settings import Settings
from models.preprocessing import normalize
from tests.app.images import encode
from tests.conftest import synthetic_images
from training import train
from training.config import parse_args


def test_a_checkpoint_written_by_the_training_job_is_served(fake_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "model.pth"
    args = ["--data-dir", str(fake_data_dir), "--no-verify", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(output), "--quiet", "--dry-run", "--val-size", "60",
            "--model-args", '{"widths": [4, 8], "pools_after": [0]}']  # fmt: skip
    metrics = train.main(parse_args(args))

    images, _ = synthetic_images(3, seed=5)
    with TestClient(create_app(Settings(model_path=output, device="cpu"))) as client:
        model = client.get("/model").json()
        upload = {"file": ("item.png", encode(images[0].numpy()), "image/png")}
        response = client.post("/predict", files=upload)

    assert model["arch"] == "cnn"
    assert model["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert model["train_args"]["dry_run"] is True
    assert model["train_args"]["output"] == "model.pth"
    assert response.status_code == 200
    # The app normalises with the statistics training measured and stored.
    predictor = Predictor.load(output, device="cpu", runtime="torch")
    spec = predictor.loaded.input_spec
    assert list(spec.mean) == model["input"]["mean"] and list(spec.std) == model["input"]["std"]
    offline = predictor.predict(normalize(images[:1].unsqueeze(1), spec.mean, spec.std))
    assert response.json()["class_index"] == int(offline.argmax(1))
