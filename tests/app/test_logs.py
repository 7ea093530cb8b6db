"""Log formats: text for a terminal, JSON lines for a pipeline, in every process of the service."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from app import request_context
from app.logs import TextFormatter, json_formatter, uvicorn_log_config
from app.request_context import RequestIdFilter
from tests.app.images import png_bytes
from tests.app.live_server import free_port, wait_until_ready
from tests.conftest import REPO


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("app.test", logging.WARNING, __file__, 1, message, args or ("there",), None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_has_level_logger_message_time_and_the_extra_fields() -> None:
    line = json.loads(json_formatter().format(record(status=200, client="10.0.0.1")))
    assert line["level"] == "WARNING"
    assert line["logger"] == "app.test"
    assert line["message"] == "hello there"
    assert line["time"].endswith("+00:00")
    assert (line["status"], line["client"]) == (200, "10.0.0.1")


def test_a_line_written_during_a_request_carries_its_id_in_either_format() -> None:
    _, token = request_context.begin("req-42")
    try:
        made = record()
        RequestIdFilter().filter(made)
    finally:
        request_context.end(token)
    assert json.loads(json_formatter().format(made))["request_id"] == "req-42"
    assert TextFormatter().format(made) == "WARNING   app.test: [req-42] hello there"
    outside = record()
    RequestIdFilter().filter(outside)
    assert TextFormatter().format(outside) == "WARNING   app.test: hello there"


def test_a_message_with_a_newline_stays_one_json_line() -> None:
    assert "\n" not in json_formatter().format(record("line one\nline two %s"))


def test_uvicorn_keeps_its_own_config_in_text_and_gets_json_with_no_access_log() -> None:
    assert uvicorn_log_config("text") is None
    config = uvicorn_log_config("json")
    assert config is not None
    assert config["formatters"]["json"]["()"] is json_formatter
    assert config["loggers"]["uvicorn.access"]["handlers"] == []


@pytest.mark.slow
def test_fashion_serve_with_json_logs_writes_only_json_lines_one_access_line_each(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASHION_")},
        "FASHION_MODEL_PATH": str(tiny_checkpoint),
        "FASHION_DEVICE": "cpu",
        "FASHION_LOG_FORMAT": "json",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "app.serve", "--port", str(port)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server, log)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + png_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        predict = urllib.request.Request(
            url + "/predict",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Request-ID": "live-1"},
        )
        with opener.open(predict, timeout=30) as response:
            assert response.headers["x-request-id"] == "live-1"
            predicted = json.load(response)["class_name"]
        with pytest.raises(urllib.error.HTTPError) as missing:
            opener.open(urllib.request.Request(url + "/nowhere", headers={"X-Request-ID": "live-2"}))
        assert missing.value.headers["x-request-id"] == "live-2"
    finally:
        server.terminate()
        server.wait(timeout=60)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.access" not in loggers  # ours replaces it
    assert "uvicorn.error" in loggers  # uvicorn's own lines, JSON from the first
    assert "\\u001b" not in text  # without their terminal colours
    assert "app.inference.supervisor" in loggers  # and the app's own
    access = [line for line in lines if line["logger"] == "app.access"]
    first = [line for line in access if line.get("request_id") == "live-1"]
    assert len(first) == 1 and first[0]["class_name"] == predicted and first[0]["status"] == 200
    second = [line for line in access if line.get("request_id") == "live-2"]
    assert len(second) == 1 and second[0]["status"] == 404
    assert all(line["client"] == "127.0.0.1" for line in access)
