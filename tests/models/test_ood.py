from pathlib import Path

import pytest
import torch

from models.calibration import Calibration
from models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model, logits_and_features
from models.ood import OODDetector, fit
from tests.conftest import TINY_CNN_ARGS


def clusters(
    n: int, seed: int, dim: int = 12, classes: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features around one centre per class, labels, and the log partition of logits that
    favour the right class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 8
    labels = torch.arange(n) % classes
    features = centres[labels] + torch.randn(n, dim, generator=generator)
    logits = torch.nn.functional.one_hot(labels, classes) * 4.0 + torch.randn(n, classes, generator=generator)
    return features, labels, torch.logsumexp(logits, 1)


def test_the_threshold_flags_the_chosen_share_of_validation_and_far_points_score_high() -> None:
    train_features, _, _ = clusters(3000, seed=0)
    val_features, _, val_partition = clusters(1000, seed=1)

    detector = fit(train_features, val_partition, val_features, 1.0, flag_rate=0.05)

    flagged = detector.score(val_partition, val_features, 1.0) > detector.threshold
    assert float(flagged.float().mean()) == pytest.approx(0.05, abs=0.002)
    held_features, _, held_partition = clusters(1000, seed=2)
    assert (
        float((detector.score(held_partition, held_features, 1.0) > detector.threshold).float().mean()) < 0.1
    )
    # Far from every class (features), and no class fitting (flat logits): flagged.
    far = torch.full((5, 12), 30.0)
    flat = torch.logsumexp(torch.zeros(5, 3), 1)
    assert bool((detector.score(flat, far, 1.0) > detector.threshold).all())


def test_the_distance_is_the_mahalanobis_distance_from_the_training_mean() -> None:
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(20000, 3, generator=generator) * torch.tensor([1.0, 2.0, 4.0]) + 5
    detector = fit(features, torch.zeros(100), features[:100], 1.0)
    probe = torch.tensor([[5.0, 5.0, 5.0], [6.0, 5.0, 5.0], [5.0, 5.0, 9.0]])
    # 0, one std along the first axis, one std along the third: 0, 1, 1.
    torch.testing.assert_close(
        detector.mahalanobis(probe), torch.tensor([0.0, 1.0, 1.0]), atol=0.03, rtol=0.03
    )


def tiny_with_ood(tmp_path: Path) -> tuple[dict, Path]:
    torch.manual_seed(0)
    model = build_model("cnn", **TINY_CNN_ARGS).eval()
    x = torch.randn(200, 1, 28, 28)
    with torch.no_grad():
        logits, features = logits_and_features(model, x)
    _, log_partition = Calibration(0.7).probabilities_and_log_partition(logits)
    detector = fit(features, log_partition, features, 0.7)
    checkpoint = make_checkpoint(
        model,
        "cnn",
        TINY_CNN_ARGS,
        FASHION_MNIST_CLASSES,
        InputSpec(),
        calibration=Calibration(0.7, "test"),
        ood=detector,
    )
    return checkpoint, tmp_path / "m.pth"


def test_the_checkpoint_round_trips_the_calibration_and_the_score(tmp_path: Path) -> None:
    checkpoint, path = tiny_with_ood(tmp_path)
    save_checkpoint(checkpoint, path)

    loaded = load_checkpoint(path)

    assert loaded.calibration == Calibration(0.7, "test")
    assert isinstance(loaded.ood, OODDetector)
    saved = checkpoint["ood"]
    assert torch.equal(loaded.ood.whitening, saved["whitening"])
    assert torch.equal(loaded.ood.mean, saved["mean"])
    assert loaded.ood.threshold == saved["threshold"] and loaded.ood.flag_rate == saved["flag_rate"]
    assert (loaded.ood.mahalanobis_center, loaded.ood.mahalanobis_scale) == tuple(saved["mahalanobis"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("whitening", torch.zeros(3, 3), "ood.whitening has shape"),
        ("mean", torch.zeros(9), "ood.mean has shape"),
        ("whitening", "matrix", "floating-point tensor"),
        ("threshold", float("nan"), "ood.threshold"),
        ("energy", [0.0, 0.0], "scale must be positive"),
        ("flag_rate", 2.0, "ood.flag_rate"),
        ("method", "knn", "ood.method"),
    ],
)
def test_a_bad_score_in_a_checkpoint_is_refused_in_one_line(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    checkpoint, path = tiny_with_ood(tmp_path)
    checkpoint["ood"][field] = value
    save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_nan_in_the_whitening_matrix_is_refused(tmp_path: Path) -> None:
    checkpoint, path = tiny_with_ood(tmp_path)
    checkpoint["ood"]["whitening"][0, 0] = float("inf")
    save_checkpoint(checkpoint, path)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)
