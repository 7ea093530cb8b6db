"""Soak: 5,000 uploads at concurrency 32, a tenth of them bad, against a real uvicorn server."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.server_process import ServerProcess, free_port
from bench.soak import soak
from tests.conftest import REAL_DATA


@pytest.mark.slow
def test_a_soak_leaves_no_error_no_wrong_answer_and_no_leak(shipped_model: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {"FASHION_MODEL_PATH": str(shipped_model), "FASHION_DEVICE": "cpu", "FASHION_LOG_LEVEL": "warning"}
    command = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess("uvicorn", command, port, tmp_path / "server.log", env)
    try:
        server.wait_ready(timeout=300)
        data_dir = REAL_DATA if (REAL_DATA / "t10k-images-idx3-ubyte.gz").exists() else None
        result = soak("127.0.0.1", port, server.process.pid, shipped_model, data_dir=data_dir)
    finally:
        server.stop()
    print(result.summary())
    assert result.requests == 5000 and result.bad == 500
    assert result.server_errors == 0, result.examples
    assert result.dropped == 0, result.examples
    assert result.wrong == 0, result.examples  # each good image: the class the model gives offline
    assert result.bad_not_4xx == 0, result.examples
    assert sum(result.statuses.values()) == 5000
    assert result.memory_growth_pct <= 10, result.summary()
