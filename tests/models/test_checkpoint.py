import logging
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from models.errors import CheckpointError
from models.metadata import FASHION_MNIST_CLASSES, TUTORIAL_INPUT, InputSpec
from models.networks import MLP, build_model
from tests.conftest import TINY_CNN_ARGS


def test_round_trip_rebuilds_the_same_network_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", **TINY_CNN_ARGS).eval()
    spec = InputSpec(mean=(0.25,), std=(0.5,))
    metrics = {"test_accuracy": 0.9, "per_class_accuracy": {"Bag": 1.0}}
    path = tmp_path / "m.pth"
    save_checkpoint(
        make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, spec, metrics, {"epochs": 2}),
        path,
    )

    loaded = load_checkpoint(path)

    assert loaded.arch == "cnn"
    assert loaded.model_args == TINY_CNN_ARGS
    assert loaded.classes == list(FASHION_MNIST_CLASSES)
    assert loaded.input_spec == spec
    assert loaded.metrics == metrics
    assert loaded.train_args == {"epochs": 2}
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.flip_average is False
    assert loaded.torch_version == str(torch.__version__)
    assert len(loaded.version) == 12 and loaded.sha256.startswith(loaded.version)
    assert not loaded.model.training
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_checkpoint_is_plain_data_for_weights_only_loading(tiny_checkpoint: Path) -> None:
    raw = torch.load(tiny_checkpoint, weights_only=True)
    assert raw["format"] == "fashion-mnist-classifier"
    assert raw["input"] == {"height": 28, "width": 28, "channels": 1, "mean": [0.286], "std": [0.353]}
    assert set(raw) >= {"state_dict", "arch", "model_args", "classes", "metrics", "train_args", "created_at"}


def test_bare_state_dict_loads_as_the_tutorial_mlp_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "model.pth"
    torch.save(MLP().state_dict(), path)  # what the tutorial writes
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(path)
    assert loaded.arch == "mlp"
    assert loaded.classes == list(FASHION_MNIST_CLASSES)
    assert loaded.input_spec == TUTORIAL_INPUT
    assert loaded.format_version is None
    assert "bare state dict" in caplog.text


class _Exploit:
    """Unpickling this would create a file: the classic malicious checkpoint."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_runs_code_is_refused_and_the_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"format": "fashion-mnist-classifier", "payload": _Exploit(marker)}, path)

    with pytest.raises(CheckpointError, match="refused") as info:
        load_checkpoint(path)

    assert str(path) in str(info.value)
    assert not marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pth", "model file not found"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "empty.pth", b""), "empty"),
        (lambda d: _write(d / "noise.pth", os.urandom(4096)), "corrupt"),
        (lambda d: _write(d / "text.pth", b"hello, I am not a checkpoint\n"), "corrupt"),
    ],
)
def test_unreadable_files_give_a_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_corrupt(tiny_checkpoint: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tiny_checkpoint)


def _edited(path: Path, **changes: object) -> Path:
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    torch.save(raw, path)
    return path


def test_unknown_arch_is_named(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown architecture 'vit'"):
        load_checkpoint(_edited(tiny_checkpoint, arch="vit"))


def test_unknown_format_version_is_named(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        load_checkpoint(_edited(tiny_checkpoint, format_version=99))


def test_weights_that_do_not_fit_the_arch(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="do not fit arch 'cnn'"):
        load_checkpoint(_edited(tiny_checkpoint, model_args={"widths": [8, 8], "pools_after": [0]}))


def test_other_pickled_data_is_not_our_format(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a fashion-mnist-classifier checkpoint"):
        load_checkpoint(path)


def test_a_crash_before_the_rename_leaves_the_previous_file_intact(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tiny_checkpoint.read_bytes()
    replacement = make_checkpoint(build_model("mlp"), "mlp", {}, FASHION_MNIST_CLASSES, InputSpec())

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(replacement, tiny_checkpoint)
    monkeypatch.undo()

    assert tiny_checkpoint.read_bytes() == before
    assert load_checkpoint(tiny_checkpoint).arch == "cnn"
    assert [p.name for p in tiny_checkpoint.parent.iterdir()] == [tiny_checkpoint.name]


def test_read_checkpoint_hashes_the_file(tiny_checkpoint: Path) -> None:
    import hashlib

    _, sha = read_checkpoint(tiny_checkpoint)
    assert sha == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()


def test_a_saved_checkpoint_is_readable_by_others_as_the_umask_allows(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(build_model("mlp"), "mlp", {}, FASHION_MNIST_CLASSES, InputSpec())
    path = tmp_path / "m.pth"
    previous = os.umask(0o022)
    try:
        save_checkpoint(checkpoint, path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


def test_flip_average_is_recorded_and_a_file_written_before_it_existed_reads_as_off(tmp_path: Path) -> None:
    model = build_model("cnn", **TINY_CNN_ARGS)
    on = make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec(), flip_average=True)
    assert on["inference"] == {"flip_average": True}
    save_checkpoint(on, tmp_path / "on.pth")
    assert load_checkpoint(tmp_path / "on.pth").flip_average is True
    older = make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec())
    del older["inference"]
    save_checkpoint(older, tmp_path / "older.pth")
    assert load_checkpoint(tmp_path / "older.pth").flip_average is False


def test_a_flip_average_that_is_not_a_boolean_is_a_bad_field(tmp_path: Path) -> None:
    model = build_model("cnn", **TINY_CNN_ARGS)
    checkpoint = make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec())
    checkpoint["inference"] = {"flip_average": "yes"}
    save_checkpoint(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad field.*flip_average"):
        load_checkpoint(tmp_path / "bad.pth")


def _input(**changes: object) -> dict[str, object]:
    return {"height": 28, "width": 28, "channels": 1, "mean": [0.286], "std": [0.353], **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input": _input(std=[0.0])}, "input.std must be positive, not 0.0"),
        ({"input": _input(std=[-1.0])}, "input.std must be positive, not -1.0"),
        (
            {"input": _input(mean=[float("nan")])},
            r"input.mean \[nan\] and input.std \[0.353\] must be finite",
        ),
        ({"input": _input(std=[float("inf")])}, "must be finite"),
        ({"input": _input(mean=[0.1, 0.2], std=[0.3, 0.3])}, "must hold one value each"),
        ({"input": _input(height=32)}, "the model expects 1x32x28 input; this code feeds 1x28x28"),
        ({"classes": ["T-shirt/top"] * 10}, "classes must be two or more distinct, non-blank names"),
        ({"classes": ["a", " "]}, "classes must be two or more distinct, non-blank names"),
        (
            {"classes": [str(i) for i in range(9)]},
            "the network gives 10 outputs but the checkpoint names 9 classes",
        ),
        (
            {"arch": "mlp", "model_args": {"hidden": -1}},
            r"bad model_args for 'mlp' \{'hidden': -1\} \(Trying to",
        ),
        (
            {"arch": "mlp", "model_args": {"hidden": 10**7}},
            "make a network of 100,007,960,000,010 parameters; at most",
        ),
        ({"arch": "mlp", "model_args": {"hidden": "big"}}, "bad model_args for 'mlp'"),
        ({"model_args": {**TINY_CNN_ARGS, "dropout": 2.0}}, "bad model_args for 'cnn'"),
    ],
)
def test_a_checkpoint_is_validated_whole_each_failure_one_line(
    tiny_checkpoint: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(_edited(tiny_checkpoint, **changes))
    assert "\n" not in str(error.value) and str(error.value).startswith(str(tiny_checkpoint))


def test_weights_that_give_no_finite_probability_are_refused(tiny_checkpoint: Path) -> None:
    raw = torch.load(tiny_checkpoint, weights_only=True)
    name = next(key for key in raw["state_dict"] if key.endswith("weight"))
    raw["state_dict"][name] = torch.full_like(raw["state_dict"][name], float("nan"))
    with pytest.raises(
        CheckpointError, match=r"probabilities on a probe input are not finite \(NaN or infinity\)"
    ):
        load_checkpoint(_edited(tiny_checkpoint, state_dict=raw["state_dict"]))


def test_the_size_check_allocates_nothing(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = torch.nn.Linear.__init__

    def recording(self: torch.nn.Linear, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(str(self.weight.device))

    monkeypatch.setattr(torch.nn.Linear, "__init__", recording)
    with pytest.raises(CheckpointError, match="parameters; at most"):
        load_checkpoint(_edited(tiny_checkpoint, arch="mlp", model_args={"hidden": 10**6}))
    assert built and set(built) == {"meta"}  # a real build would have taken 4 GB


def test_a_refused_pickle_gives_one_error_and_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "protocol4.pth"
    path.write_bytes(pickle.dumps({"format": os.getcwd}, protocol=4))  # not torch's layout, a global
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=r"protocol4\.pth: "):
            load_checkpoint(path)
    assert caught == []
