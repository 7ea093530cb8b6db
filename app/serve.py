"""``fashion-serve``: run the API with uvicorn, after checking settings and the model file.

    fashion-serve --host 0.0.0.0 --port 8000 --workers 2

Everything else is configured through FASHION_* variables (see app/settings.py). On
SIGTERM the server stops accepting connections, answers the requests in flight (for up to
FASHION_SHUTDOWN_GRACE_S), shuts the model down and exits with status 0.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
from types import FrameType

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from app.http_protocol import BoundedHttpToolsProtocol
from app.logs import uvicorn_log_config
from app.settings import Settings, SettingsError, load_settings

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


class PreCheckError(Exception):
    """Something that would stop the server, found before any of it starts."""


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, if the address is taken: uvicorn would find out only after
    every worker had loaded the model."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a server just stopped is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreCheckError(
                    f"port {port} on {host} is already in use; stop what listens there or choose "
                    "another with --port"
                ) from None
            raise PreCheckError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def _check_models(settings: Settings) -> str | None:
    from app.lifespan import checkpoints_to_serve
    from app.prediction import DeviceError
    from app.predictor import resolve_device
    from models.checkpoint import load_checkpoint
    from models.errors import CheckpointError
    from models.repository import RepositoryError

    try:
        resolve_device(settings.device)
    except DeviceError as exc:
        return f"FASHION_DEVICE={settings.device}: {exc}; use auto or cpu"
    try:
        for path in checkpoints_to_serve(settings):
            load_checkpoint(path)
    except (SettingsError, CheckpointError, RepositoryError) as exc:
        return str(exc)
    return None


def check_models(settings: Settings) -> str | None:
    """The device and every model file the server will load: what is wrong, or None.

    Run in a process of its own, which imports torch and reads each model, then exits: the
    server process keeps neither, and its inference workers load the model themselves.
    """
    from app.inference.hosts import in_fresh_process

    return in_fresh_process(_check_models, settings)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("error: --workers must be at least 1")
    # Checked here once, before any worker starts: uvicorn would otherwise restart
    # workers that die on a bad model file, over and over. Cheapest first: the settings
    # and the port, then the device and the model files.
    try:
        settings = load_settings()
        check_port(args.host, args.port)
        problem = check_models(settings)
        if problem is not None:
            raise PreCheckError(problem)
    except (SettingsError, PreCheckError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.host not in LOOPBACK and settings.api_key is None:
        print(
            f"warning: listening on {args.host} without FASHION_API_KEY: anyone who can reach "
            "this port can use the model",
            file=sys.stderr,
        )
    # After a graceful shutdown uvicorn raises the SIGTERM it caught once more, to die of it
    # (status 143). Caught here, that ends the process with status 0, as it does with
    # several workers, whose supervisor never re-raises.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=settings.log_level,
            # The app logs each request itself (app.access_log), with its id: uvicorn's line
            # would double it. In JSON, uvicorn's own lines are JSON from the first.
            access_log=False,
            log_config=uvicorn_log_config(settings.log_format) or LOGGING_CONFIG,
            # The client's address comes from X-Forwarded-For only through FASHION_TRUSTED_PROXIES;
            # uvicorn's own rule would trust 127.0.0.1 (FORWARDED_ALLOW_IPS) as well.
            proxy_headers=False,
            # After SIGTERM: stop accepting, let requests in flight finish for up to this
            # long, then cancel what is left and run the lifespan's shutdown.
            timeout_graceful_shutdown=settings.shutdown_grace_s,
            # The Server header only tells a scanner what to try; Date stays (HTTP asks for it).
            server_header=False,
            # The C parser, with a size limit and a deadline on each request's head.
            http=BoundedHttpToolsProtocol,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
