"""Every bad upload of bench/bad_inputs.py against one real uvicorn server: each gets its
documented status, never a 5xx, and the server stays healthy after each."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from app.settings import ENV_PREFIX
from bench.bad_inputs import corpus, send_case
from bench.server_process import free_port
from models.checkpoint import FASHION_MNIST_CLASSES, InputSpec, make_checkpoint, save_checkpoint
from models.networks import build_model
from tests.conftest import REPO, TINY_CNN_ARGS

# Small, so the oversized bodies are quick to send and the bodies that never end are cut
# off quickly; still far above every other case's size.
UPLOAD_LIMIT = 512 * 1024
BODY_TIMEOUT_S = 1.0
# Refused by uvicorn's HTTP parser, before the app: a plain-text 400, not JSON.
PARSER_REFUSALS = {"chunked-bad-size", "length-not-a-number"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """uvicorn serving an untrained tiny CNN; yields host, port and the server's log file."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    checkpoint = folder / "tiny.pth"
    model = build_model("cnn", **TINY_CNN_ARGS)
    save_checkpoint(
        make_checkpoint(model, "cnn", TINY_CNN_ARGS, FASHION_MNIST_CLASSES, InputSpec()), checkpoint
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env |= {
        "FASHION_MODEL_PATH": str(checkpoint),
        "FASHION_DEVICE": "cpu",
        "FASHION_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "FASHION_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as output:  # a file, not a pipe nobody reads, which could fill and stall it
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # Poll until ready; the deadline only stops a broken start from hanging the suite.
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"the server exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield "127.0.0.1", port, log
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_corpus_has_at_least_30_distinct_cases_each_with_a_2xx_or_4xx() -> None:
    cases = corpus()
    names = [case.name for case in cases]
    assert len(set(names)) == len(names) >= 30
    for case in cases:
        assert case.expected and all(status == 200 or 400 <= status < 500 for status in case.expected), (
            case.name
        )


@pytest.mark.slow
def test_every_bad_input_gets_its_documented_status_and_the_server_stays_up(
    server: tuple[str, int, Path],
) -> None:
    host, port, log = server
    problems = []
    for case in corpus(UPLOAD_LIMIT):
        # The timeout is only a backstop: a right answer comes within BODY_TIMEOUT_S.
        answer = send_case(host, port, case, timeout=30)
        if answer is None:
            problems.append(f"{case.name}: no answer")
        elif answer.status not in case.expected:
            problems.append(
                f"{case.name}: {answer.status} {answer.body[:200]!r}, expected {set(case.expected)}"
            )
        elif answer.status != 200 and case.name not in PARSER_REFUSALS:
            # Every refusal from the app is JSON with a short detail, nothing more.
            detail = json.loads(answer.body)["detail"]
            if not isinstance(detail, str) or "Traceback" in detail:
                problems.append(f"{case.name}: detail {detail!r}")
            if answer.status in (408, 413) and answer.headers.get("connection") != "close":
                problems.append(f"{case.name}: {answer.status} without Connection: close")
        health = httpx.get(f"http://{host}:{port}/health", timeout=10)
        if health.status_code != 200:
            problems.append(f"{case.name}: /health answered {health.status_code} after it")
    assert problems == []
    # No case reached the catch-all 500 handler, which logs a traceback.
    assert "Traceback" not in log.read_text()
