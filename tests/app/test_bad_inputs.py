"""Every bad upload of bench/bad_inputs.py against one real uvicorn server: each gets its
documented status, never a 5xx, and the server stays healthy after each."""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import ENV_PREFIX
from bench.bad_inputs import corpus, send_case
from bench.server_process import ServerProcess, free_port
from tests.conftest import write_tiny_checkpoint

# Small, so the oversized bodies are quick to send and the bodies that never end are cut
# off quickly; still far above every other case's size.
UPLOAD_LIMIT = 512 * 1024
BODY_TIMEOUT_S = 1.0
# Refused by the HTTP protocol, before the app: plain text, not JSON (uvicorn's parser's
# 400s, and app.http_protocol's bounds on the request head).
PARSER_REFUSALS = {
    "chunked-bad-size",
    "length-not-a-number",
    "header-100kib",
    "header-never-ends",
    "head-trickles",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """uvicorn serving an untrained tiny CNN; yields host, port and the server's log file."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    env = {
        "FASHION_MODEL_PATH": str(write_tiny_checkpoint(folder / "tiny.pth")),
        "FASHION_DEVICE": "cpu",
        "FASHION_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "FASHION_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    port = free_port()
    log = folder / "server.log"
    command = ["-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--http", "app.http_protocol:BoundedHttpToolsProtocol"]  # as fashion-serve runs it
    with pytest.MonkeyPatch.context() as patch:
        # The server's settings are these alone, whatever FASHION_* the caller's shell has.
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX):
                patch.delenv(name)
        server = ServerProcess("uvicorn", command, port, log, env)
    try:
        # The deadline only stops a broken start from hanging the suite.
        server.wait_ready(timeout=180)
        yield "127.0.0.1", port, log
    finally:
        server.stop()


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
            # Every refusal from the app is JSON with a short detail (an error, on /v2), nothing more.
            (detail,) = json.loads(answer.body).values()
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
