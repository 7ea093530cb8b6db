"""README's tour, command by command, as a newcomer runs it: sample images, a prediction
from the shipped model, training on one's own images, their evaluation, and the service
serving that model under its own class names.

The commands are read from README.md, so an edit there that breaks the walk fails here.
Two substitutions only: the Fashion-MNIST folder is wherever the tests find it (not
necessarily ../shared beside the checkout), and the server listens on a free port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.live_server import free_port, wait_until_ready
from tests.conftest import REAL_DATA, REPO
from training import __main__ as training_main
from training import evaluate, sample_images

README = (REPO / "README.md").read_text()
SHARED_DATA = "../shared/datasets/fashion-mnist"


def tour() -> str:
    return README[README.index("## A tour") : README.index("\n## ", README.index("## A tour") + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def tour_commands() -> list[str]:
    return [line for block in blocks(tour(), "bash") for line in block.strip().splitlines()]


def module_argv(command: str, module: str) -> list[str]:
    """The arguments after ``.venv/bin/python -m <module>``, with the data folder found."""
    words = shlex.split(command)
    assert words[:3] == [".venv/bin/python", "-m", module], command
    return [str(REAL_DATA) if word == SHARED_DATA else word for word in words[3:]]


def curl(command: str, base: str, client: httpx.Client | TestClient) -> httpx.Response:
    """Run a README ``curl -s [-F field=@file] URL`` against ``base``."""
    words = shlex.split(command)
    assert words[:2] == ["curl", "-s"], command
    url = base + "/" + words[-1].split("/", 1)[1]
    forms = [words[i + 1] for i, word in enumerate(words) if word == "-F"]
    if not forms:
        return client.get(url)
    files = []
    for form in forms:
        field, _, path = form.partition("=@")
        files.append((field, (Path(path).name, Path(path).read_bytes(), "image/png")))
    return client.post(url, files=files)


def shown_json(after: str) -> list[dict[str, object]]:
    """The JSON lines README shows after the text ``after``."""
    block = blocks(tour()[tour().index(after) :], "json")[0]
    return [json.loads(line) for line in block.strip().splitlines()]


@pytest.mark.slow
def test_the_tour_runs_verbatim_from_sample_images_to_serving_your_own_model(
    real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = tour_commands()
    kinds = [c.split()[0] if not c.startswith(".venv") else " ".join(c.split()[:3]) for c in commands]
    assert kinds[:6] == [
        ".venv/bin/python -m training.sample_images",
        "curl",
        ".venv/bin/python -m training",
        ".venv/bin/python -m training.evaluate",
        "FASHION_MODEL_PATH=runs/latest/model.pth",
        "curl",
    ], commands
    monkeypatch.chdir(tmp_path)  # a fresh checkout's root, as far as these commands can tell
    monkeypatch.setattr(sample_images, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    for name in [n for n in os.environ if n.startswith("FASHION_")]:
        monkeypatch.delenv(name)

    # Some images to try.
    sample_images.run(module_argv(commands[0], "training.sample_images"))
    assert (tmp_path / "my-images" / "labels.csv").is_file()

    # Classify one with the shipped model (the set-up command's server).
    shipped = shown_json("**Classify one**")[0]
    with TestClient(create_app(Settings(device="cpu"))) as client:
        answer = curl(commands[1], "http://testserver", client)
    assert answer.status_code == 200
    assert answer.json()["class_name"] == shipped["class_name"]
    assert answer.json()["confidence"] == pytest.approx(shipped["confidence"], abs=1e-4)

    # Train on your own images: the README command alone, into runs/<date>-<time>/.
    monkeypatch.setattr(sys, "argv", ["python -m training", *module_argv(commands[2], "training")])
    threads = torch.get_num_threads()
    try:
        training_main.run()
    finally:
        torch.set_num_threads(threads)  # the job takes every core; the other tests take one
    out = capsys.readouterr().out
    model = tmp_path / "runs" / "latest" / "model.pth"
    assert model.is_file() and "model written to runs/" in out

    # Evaluate it on the held-out images: at least 90%.
    evaluate.run(module_argv(commands[3], "training.evaluate"))
    report = capsys.readouterr().out
    accuracy = float(re.search(r"Accuracy: ([\d.]+)%", report).group(1))  # type: ignore[union-attr]
    assert "on 300 images of my-images/test.csv" in report
    assert accuracy >= 90.0, report

    # Serve it with fashion-serve, then ask for its classes and a prediction.
    words = shlex.split(commands[4])
    env_name, _, env_value = words[0].partition("=")
    assert words[1:3] == [".venv/bin/fashion-serve", "--host"]
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}, env_name: env_value,
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        command = [sys.executable, "-m", "app.serve", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server, log)
        shown = shown_json("**Serve it**")
        with httpx.Client(timeout=30, trust_env=False) as client:
            classes = curl(commands[5], base, client)
            prediction = curl(commands[6], base, client)
            page = client.get(base + "/")
        assert classes.json() == shown[0] == {"classes": ["handbag", "pants", "shoe"]}
        assert prediction.status_code == 200
        assert prediction.json()["class_name"] == shown[1]["class_name"] == "shoe"
        assert page.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "model ready" in log.read_text()


def test_every_document_the_readme_links_exists() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def test_the_readme_keeps_its_two_set_up_commands() -> None:
    commands = [block.strip() for block in blocks(README[: README.index("## A tour")], "bash")]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . "
        "&& .venv/bin/fashion-serve --host 0.0.0.0 --port 8000",
        'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pytest',
    ]
