"""Training straight into a model repository: ``--repository R --model-name N``.

The run writes into a staging folder inside ``R/N`` (a dot folder, which no server takes
for a version) and, once the checkpoint and its report are complete, renames that folder
to the next version: a load never sees half a version.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.repository import STAGING_PREFIX, RepositoryError, check_name, publish, staging_folder


def model_name(text: str) -> str:
    """argparse type for --model-name: a name a server accepts, never a path."""
    try:
        return check_name(text)
    except RepositoryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def staging_output(args: argparse.Namespace, is_main: bool) -> Path:
    """The checkpoint path inside a new staging folder (created by rank 0 only)."""
    if args.output is not None:
        raise SystemExit("error: --repository and --output: give one (the repository picks the folder)")
    root = Path(args.repository)
    if not is_main:  # only rank 0 writes; the other ranks never use the path
        return root / args.model_name / f"{STAGING_PREFIX}rank" / "model.pth"
    try:
        return staging_folder(root, args.model_name) / "model.pth"
    except OSError as exc:
        raise SystemExit(
            f"error: --repository {root}: cannot create a folder there ({exc.strerror})"
        ) from None


def publish_output(args: argparse.Namespace, output: Path) -> Path:
    """Publish the run's staging folder as the model's next version; the checkpoint's new path.

    Only a staging folder of this repository is renamed, never a folder a user named."""
    staging = output.parent
    expected = Path(args.repository) / args.model_name
    if not staging.name.startswith(STAGING_PREFIX) or staging.parent.resolve() != expected.resolve():
        return output
    version = publish(staging)
    return staging.parent / str(version) / output.name
