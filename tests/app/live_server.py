"""A real uvicorn process serving a checkpoint on a free port, for clients that need a socket."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    # No proxy: a developer's HTTP_PROXY must not intercept a request to localhost.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server was not ready within {timeout:g} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def live_server(model: Path | None, log: Path, **settings: str) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a server on ``model`` (None: a model_repository setting),
    with FASHION_<NAME> ``settings``."""
    with live_server_process(model, log, **settings) as (url, _):
        yield url


@contextlib.contextmanager
def live_server_process(
    model: Path | None, log: Path, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``live_server``'s URL, and its process."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASHION_")},
        **({} if model is None else {"FASHION_MODEL_PATH": str(model)}),
        "FASHION_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",  # a test server: leave the cores to whatever else runs
        **{f"FASHION_{name.upper()}": value for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server, log)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
