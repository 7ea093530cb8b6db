"""A model repository on disk, laid out as Triton's: ``<root>/<model name>/<version>/model.pth``.

Shared by the training job, which publishes versions into one, and the server, which reads
one. Names and versions are checked here before any of them touches the file system: a
name is letters, digits, ``_``, ``.`` and ``-`` and never starts with a dot (so never ``..``),
a version a positive integer without leading zeros (so ``1`` and ``01`` are never two names
for one folder).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

CHECKPOINT = "model.pth"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")
# A version being written: a dot folder, which no reader takes for a version.
STAGING_PREFIX = ".staging-"


class RepositoryError(ValueError):
    """A bad model name or version, or a repository that cannot be read or written."""


def check_name(name: str) -> str:
    """``name`` if it is a valid model name; RepositoryError otherwise."""
    if not NAME.fullmatch(name):
        raise RepositoryError(
            f"invalid model name {name[:100]!r}: use letters, digits, '_', '.' and '-' (at most 64), "
            "not starting with '.' or '-'"
        )
    return name


def parse_version(text: str) -> int | None:
    """The version a folder or URL names, or None when it is no positive integer."""
    return int(text) if VERSION.fullmatch(text) else None


def model_names(root: Path) -> list[str]:
    """The model folders of a repository, by name; folders with other names are not models."""
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise RepositoryError(f"{root}: cannot read the model repository ({exc.strerror})") from None
    return [entry.name for entry in entries if NAME.fullmatch(entry.name) and entry.is_dir()]


def model_versions(root: Path, name: str) -> dict[int, Path]:
    """A model's versions that hold a checkpoint: version -> its model.pth. A missing folder has none."""
    folder = root / check_name(name)
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RepositoryError(f"{folder}: cannot read the model's folder ({exc.strerror})") from None
    found = {}
    for entry in entries:
        version = parse_version(entry.name)
        if version is not None and (entry / CHECKPOINT).is_file():
            found[version] = entry / CHECKPOINT
    return dict(sorted(found.items()))


def staging_folder(root: Path, name: str) -> Path:
    """A new, empty folder inside the model's folder to write a version into before publishing it."""
    folder = root / check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def publish(staging: Path) -> int:
    """Rename a finished staging folder to the model's next version; returns that version.

    A rename is atomic: a reader sees no version or the whole of it. Two jobs publishing at
    once both try the same number; the second rename fails on the first's folder and takes
    the next one.
    """
    folder = staging.parent
    while True:
        versions = [v for entry in folder.iterdir() if (v := parse_version(entry.name)) is not None]
        version = max(versions, default=0) + 1
        try:
            os.rename(staging, folder / str(version))
            return version
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise


def discard(staging: Path) -> None:
    """Remove an unfinished staging folder."""
    shutil.rmtree(staging, ignore_errors=True)
