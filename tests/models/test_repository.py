"""The repository layout: names and versions checked before the file system, atomic publishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.repository import (
    RepositoryError,
    check_name,
    discard,
    model_names,
    model_versions,
    parse_version,
    publish,
    staging_folder,
)


@pytest.mark.parametrize("name", ["fashion-mnist", "a", "v1.2_b", "A" * 64])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "A" * 65, "é", "a\x00"]
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        check_name(name)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1", 1),
        ("42", 42),
        ("0", None),
        ("01", None),
        ("-1", None),
        ("1.0", None),
        ("x", None),
        ("9" * 10, None),
    ],
)
def test_versions_are_positive_integers(text: str, version: int | None) -> None:
    assert parse_version(text) == version


def test_only_valid_folders_with_a_checkpoint_are_versions(tmp_path: Path) -> None:
    for folder in ("m/1", "m/2", "m/03", "m/x", "m/.staging-1", "m/5", ".hidden/1", "other/1"):
        (tmp_path / folder).mkdir(parents=True)
        if folder != "m/5":
            (tmp_path / folder / "model.pth").write_bytes(b"x")
    (tmp_path / "file").write_bytes(b"x")
    assert model_names(tmp_path) == ["m", "other"]
    assert model_versions(tmp_path, "m") == {1: tmp_path / "m/1/model.pth", 2: tmp_path / "m/2/model.pth"}
    assert model_versions(tmp_path, "absent") == {}
    with pytest.raises(RepositoryError):
        model_versions(tmp_path, "..")


def test_publish_takes_the_next_version_and_skips_a_taken_one(tmp_path: Path) -> None:
    first = staging_folder(tmp_path, "m")
    (first / "model.pth").write_bytes(b"1")
    second = staging_folder(tmp_path, "m")
    (second / "model.pth").write_bytes(b"2")
    assert model_versions(tmp_path, "m") == {}  # staging folders are no versions
    assert publish(first) == 1
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "other").write_bytes(b"taken")  # another job's, not empty
    assert publish(second) == 3
    assert (tmp_path / "m/3/model.pth").read_bytes() == b"2"
    leftover = staging_folder(tmp_path, "m")
    discard(leftover)
    assert not leftover.exists()


def test_an_unreadable_repository_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="cannot read the model repository"):
        model_names(tmp_path / "missing")
