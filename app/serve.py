"""``fashion-serve``: run the API with uvicorn, after checking settings and the model file.

    fashion-serve --host 0.0.0.0 --port 8000 --workers 2

Everything else is configured through FASHION_* variables (see app/settings.py).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.settings import SettingsError, load_settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Serve the Fashion-MNIST classifier (app.main:app) with uvicorn",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for all")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers", type=int, default=1, help="processes, each with its own copy of the model"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    # Imported here, not at the top: each worker re-imports this module when it starts,
    # and uvicorn restarts a worker that is still importing torch after a few seconds.
    from models.checkpoint import CheckpointError, load_checkpoint

    # Checked here once, before any worker starts: uvicorn would otherwise restart
    # workers that die on a bad model file, over and over.
    try:
        settings = load_settings()
        load_checkpoint(settings.model_path)
    except (SettingsError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.host not in LOOPBACK and settings.api_key is None:
        print(
            f"warning: listening on {args.host} without FASHION_API_KEY: anyone who can reach "
            "this port can use the model",
            file=sys.stderr,
        )
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
