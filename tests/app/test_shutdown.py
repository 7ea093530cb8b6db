"""Graceful shutdown: fashion-serve answers what is in flight at SIGTERM, then exits with 0."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import app.serve
from bench.server_process import ServerProcess, free_port
from bench.shutdown import CANCELLED, WAITING, PartialRequest, drill, wait_for_log, wait_until_read
from bench.uploads import multipart
from tests.app.images import png_bytes


def test_fashion_serve_gives_uvicorn_the_grace_and_no_server_header(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASHION_MODEL_PATH", str(tiny_checkpoint))
    monkeypatch.setenv("FASHION_SHUTDOWN_GRACE_S", "7")
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(app.serve.uvicorn, "run", lambda *a, **k: calls.append(k))
    before = signal.getsignal(signal.SIGTERM)
    app.serve.main([])
    (kwargs,) = calls
    assert kwargs["timeout_graceful_shutdown"] == 7
    assert kwargs["server_header"] is False
    assert "date_header" not in kwargs  # uvicorn's default: a Date header on every answer
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


@pytest.mark.slow
def test_requests_in_flight_at_sigterm_are_all_answered(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = drill(tiny_checkpoint, tmp_path, requests=20, grace_s=30)
    report = f"{result.summary()}\n{result.failures}\n{result.log_tail}"
    assert result.in_flight_at_sigterm == 20, report  # each had sent all but the body's tail
    assert result.refused_after_sigterm, report
    assert result.statuses == {200: 20}, report
    assert result.failures == [], report  # each a valid prediction, the class the model gives offline
    # Drained within the grace period: past it, uvicorn cancels what is left and logs it.
    assert not result.cancelled, report
    assert result.exit_code == 0, report
    assert "server" not in result.server_headers and "date" in result.server_headers


@pytest.mark.slow
def test_a_request_stalled_past_the_grace_is_cancelled_and_the_server_exits(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "server.log"
    env = {
        "FASHION_MODEL_PATH": str(tiny_checkpoint),
        "FASHION_DEVICE": "cpu",
        "FASHION_SHUTDOWN_GRACE_S": "1",
        "FASHION_BODY_TIMEOUT_S": "600",  # the grace, not the body's deadline, must end it
    }
    server = ServerProcess("fashion-serve", ["-m", "app.serve", "--port", str(port)], port, log, env)
    try:
        server.wait_ready(timeout=300)
        stalled = PartialRequest(port, multipart(png_bytes()))  # its tail is never sent
        assert wait_until_read(port, [stalled]) == 1
        os.kill(server.process.pid, signal.SIGTERM)
        assert wait_for_log(log, WAITING, timeout=60)
        # A deadline only so that a server that never stops cannot hang the suite.
        assert server.process.wait(timeout=120) == 0
        stalled.close()
    finally:
        server.stop()
    output = log.read_text()
    assert CANCELLED in output and "Application shutdown complete" in output
