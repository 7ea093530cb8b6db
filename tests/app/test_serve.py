"""A real server: uvicorn in a subprocess on a free port, and the fashion-serve command."""

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from app.serve import get_args_parser
from tests.app.images import png_bytes
from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_real_uvicorn_server_classifies_a_posted_png(tiny_checkpoint: Path) -> None:
    port = free_port()
    env = {**os.environ, "FASHION_MODEL_PATH": str(tiny_checkpoint), "FASHION_DEVICE": "cpu"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Poll until ready; the deadline only stops a broken start from hanging the suite.
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (
                f"the server exited:\n{server.stdout.read() if server.stdout else ''}"
            )
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        response = httpx.post(
            f"{base}/predict", files={"file": ("item.png", png_bytes(), "image/png")}, timeout=30
        )
        assert response.status_code == 200
        body = response.json()
        assert body["model_version"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()[:12]
        assert body["preprocessing"] == {"original_size": [28, 28], "inverted": False}
        assert len(body["top_k"]) == 3
        assert httpx.get(f"{base}/health/live", timeout=5).json() == {"status": "alive"}
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    assert "model ready: device=cpu arch=cnn" in output
    assert "Traceback" not in output


def test_fashion_serve_has_host_port_and_workers() -> None:
    args = get_args_parser().parse_args(["--host", "0.0.0.0", "--port", "9000", "--workers", "2"])
    assert (args.host, args.port, args.workers) == ("0.0.0.0", 9000, 2)


@pytest.mark.slow
def test_fashion_serve_refuses_a_missing_model_before_starting(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pth"
    result = subprocess.run(
        [sys.executable, "-m", "app.serve", "--port", "0"],
        cwd=REPO,
        env={**os.environ, "FASHION_MODEL_PATH": str(missing)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {missing}: model file not found\n"


@pytest.mark.parametrize(("host", "key", "warned"), [("0.0.0.0", None, True), ("0.0.0.0", "k", False),
                                                       ("127.0.0.1", None, False)])  # fmt: skip
def test_fashion_serve_warns_when_it_listens_beyond_loopback_without_a_key(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    host: str, key: str | None, warned: bool,
) -> None:  # fmt: skip
    import app.serve

    monkeypatch.setenv("FASHION_MODEL_PATH", str(tiny_checkpoint))
    if key:
        monkeypatch.setenv("FASHION_API_KEY", key)
    started: list[str] = []
    monkeypatch.setattr(app.serve.uvicorn, "run", lambda *a, **k: started.append(k["host"]))
    app.serve.main(["--host", host, "--port", "0"])  # port 0: whatever else listens on 8000
    assert started == [host]
    assert ("without FASHION_API_KEY" in capsys.readouterr().err) is warned


def run_fashion_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
    return subprocess.run([sys.executable, "-m", "app.serve", *args], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.slow
def test_fashion_serve_refuses_a_busy_port_before_loading_the_model(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A model that is not there: the port is checked first, so its error is the one shown.
        result = run_fashion_serve({"FASHION_MODEL_PATH": str(tmp_path / "gone.pth")}, "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use; stop what listens there or choose another "
        "with --port\n"
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_fashion_serve_refuses_a_missing_gpu_before_loading_the_model(tmp_path: Path) -> None:
    env = {"FASHION_DEVICE": "cuda", "FASHION_MODEL_PATH": str(tmp_path / "gone.pth")}
    result = run_fashion_serve(env, "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "error: FASHION_DEVICE=cuda: device 'cuda': CUDA is not available on this machine; use auto or cpu\n"
    )


def test_fashion_serve_stops_on_a_misspelt_variable(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.serve

    monkeypatch.setenv("FASHION_MODEL_PAHT", str(tiny_checkpoint))
    monkeypatch.setattr(app.serve.uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    with pytest.raises(SystemExit) as info:
        app.serve.main(["--port", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: unknown settings: FASHION_MODEL_PAHT is not a setting; did you mean FASHION_MODEL_PATH?\n"
    )
