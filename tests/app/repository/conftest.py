"""Model repositories of tiny checkpoints in tmp_path, and clients serving them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ADMIN_KEY = "admin-secret"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def add_version(root: Path, name: str, version: int, checkpoint: Path) -> Path:
    """``root/name/version/model.pth``, a copy of ``checkpoint``."""
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    return Path(shutil.copyfile(checkpoint, folder / "model.pth"))


@pytest.fixture
def repository(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """``fashion`` versions 1 and 2, ``other`` version 1."""
    root = tmp_path / "repository"
    add_version(root, "fashion", 1, tiny_checkpoint)
    add_version(root, "fashion", 2, tiny_checkpoint)
    add_version(root, "other", 1, tiny_checkpoint)
    return root


def repository_settings(root: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_repository": root,
        "default_model": "fashion",
        "admin_key": ADMIN_KEY,
        "device": "cpu",
        "inference_process": False,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def client(repository: Path) -> Iterator[TestClient]:
    """The app with its real lifespan on ``repository``, its workers in threads."""
    with TestClient(create_app(repository_settings(repository))) as test_client:
        yield test_client
