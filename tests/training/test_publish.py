"""Training into a model repository: each run is the model's next version, published whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from models.repository import model_versions
from training import train
from training.config import parse_args
from training.publish import publish_output

TINY = '{"widths": [4, 8], "pools_after": [0], "head_pool": 1}'


def args_for(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--no-verify", "--cache-dir", str(root.parent / "cache"),
            "--repository", str(root), "--model-name", "shoes", "--quiet", "--epochs", "1",
            "--model-args", TINY, "--batch-size", "16", "--val-size", "60", "--dry-run", *extra]  # fmt: skip


def test_two_runs_publish_versions_1_and_2(fake_data_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "repository"
    train.main(parse_args(args_for(fake_data_dir, root)))
    train.main(parse_args(args_for(fake_data_dir, root)))
    versions = model_versions(root, "shoes")
    assert list(versions) == [1, 2]
    assert load_checkpoint(versions[2]).arch == "cnn"
    assert (root / "shoes" / "2" / "model_metrics.json").is_file()  # the report went with it
    assert [p.name for p in (root / "shoes").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name", ["..", "a/b", ".x"])
def test_a_model_name_that_is_a_path_is_refused(fake_data_dir: Path, tmp_path: Path, name: str) -> None:
    arguments = args_for(fake_data_dir, tmp_path / "repository")
    arguments[arguments.index("shoes")] = name
    with pytest.raises(SystemExit):
        parse_args(arguments)


def test_repository_and_output_together_are_refused(fake_data_dir: Path, tmp_path: Path) -> None:
    arguments = [*args_for(fake_data_dir, tmp_path / "repository"), "--output", str(tmp_path / "m.pth")]
    with pytest.raises(SystemExit, match="--repository and --output"):
        train.main(parse_args(arguments))


def test_only_a_staging_folder_is_ever_renamed(tmp_path: Path) -> None:
    folder = tmp_path / "repository" / "shoes" / "mine"
    folder.mkdir(parents=True)
    args = parse_args(["--repository", str(tmp_path / "repository"), "--model-name", "shoes"])
    assert publish_output(args, folder / "model.pth") == folder / "model.pth"
    assert folder.is_dir()
