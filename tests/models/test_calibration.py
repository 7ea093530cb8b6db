import math
from pathlib import Path

import pytest
import torch

from models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    view_probabilities,
)
from models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from models.errors import CheckpointError
from models.metadata import FASHION_MNIST_CLASSES, InputSpec
from models.networks import build_model
from tests.conftest import TINY_CNN_ARGS


def overconfident(n: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z), and logits ``scale`` x z: a model too sure by a factor ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=generator) * 2
    labels = torch.multinomial(z.softmax(1), 1, generator=generator).squeeze(1)
    return (z * scale).unsqueeze(0), labels


def test_a_fitted_temperature_lowers_the_calibration_error_on_held_out_data() -> None:
    fit_logits, fit_labels = overconfident(4000, seed=0)
    held_logits, held_labels = overconfident(4000, seed=1)

    temperature = fit_temperature(fit_logits, fit_labels)

    assert temperature == pytest.approx(3.0, rel=0.1)  # the factor the logits were inflated by
    before = expected_calibration_error(view_probabilities(held_logits), held_labels)
    after = expected_calibration_error(view_probabilities(held_logits, temperature), held_labels)
    assert before > 0.1
    assert after < 0.03 and after < before / 4


def test_the_temperature_is_fitted_to_the_averaged_views_the_server_serves() -> None:
    logits, labels = overconfident(3000, seed=2, scale=0.5)  # under-confident, as label smoothing makes
    two_views = torch.cat([logits, logits + 0.1 * torch.randn_like(logits)])
    temperature = fit_temperature(two_views, labels)
    assert temperature < 1
    probs = Calibration(temperature).probabilities(two_views)
    assert probs.shape == (3000, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(3000))
    assert expected_calibration_error(probs, labels) < expected_calibration_error(
        Calibration().probabilities(two_views), labels
    )


def test_ece_of_a_known_case_and_its_bins() -> None:
    # Four images at confidence 0.9 (three right), four at 0.6 (all right): |0.75-0.9| and |1-0.6|.
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 0, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.15 + 0.5 * 0.4)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 8
    assert [b for b in bins if b["count"] == 4][1]["accuracy"] == 0.75


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "temperature", "temperature": math.nan},
        {"method": "temperature", "temperature": -1.0},
        {"method": "temperature", "temperature": 0.0},
        {"method": "temperature", "temperature": 1e9},
        {"method": "temperature", "temperature": True},
        {"method": "temperature", "temperature": "2"},
        {"method": "isotonic", "temperature": 1.0},
        [1.0],
    ],
)
def test_a_checkpoint_with_a_bad_calibration_is_refused_in_one_line(tmp_path: Path, bad: object) -> None:
    model = build_model("cnn", **TINY_CNN_ARGS)
    checkpoint = make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec())
    checkpoint["calibration"] = bad
    save_checkpoint(checkpoint, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="calibration") as caught:
        load_checkpoint(tmp_path / "m.pth")
    assert "\n" not in str(caught.value)


def test_a_checkpoint_without_calibration_serves_its_plain_softmax(tiny_checkpoint: Path) -> None:
    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.calibration == Calibration() and loaded.calibration.temperature == 1.0
    assert loaded.ood is None


def test_the_log_partition_from_the_softmax_is_logsumexp_even_for_extreme_logits() -> None:
    logits = torch.tensor(
        [[[0.0, 1.0, 2.0], [300.0, -300.0, 0.0]], [[-50.0, -50.0, -50.0], [1e-3, 0.0, 0.0]]]
    )
    probabilities, partition = Calibration(0.5).probabilities_and_log_partition(logits)
    torch.testing.assert_close(partition, (logits / 0.5).logsumexp(-1).mean(0))
    torch.testing.assert_close(probabilities, (logits / 0.5).softmax(-1).mean(0))
    assert torch.isfinite(partition).all()
