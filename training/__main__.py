"""``python -m training``: see training/train.py."""

import logging
import sys

from models.errors import CheckpointError
from training.config import parse_args
from training.errors import DatasetError
from training.train import main


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        main(parse_args())
    except (DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:  # a file that cannot be written or read, with its path
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
