"""Which process holds the model: only the inference worker. The server process, the
forkserver and the decoders never load torch, and a worker serving ONNX Runtime does not
either; a replica holds torch once, in a worker serving torch, or not at all. A worker in
a thread (``FASHION_INFERENCE_PROCESS=false``) serves from the server process itself."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from tests.app.live_server import live_server_process


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def get_json(url: str) -> dict[str, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return dict(json.loads(response.read()))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime", "torch"])
def test_only_a_worker_serving_torch_loads_torch(tiny_checkpoint: Path, tmp_path: Path, runtime: str) -> None:
    with live_server_process(tiny_checkpoint, tmp_path / "server.log", runtime=runtime) as (url, server):
        assert get_json(url + "/model")["runtime"] == runtime
        processes = process_tree(server.pid)
        # The server, the forkserver, two decoders, the worker, multiprocessing's resource tracker.
        assert len(processes) >= 5
        holding = [pid for pid in processes if maps_torch(pid)]
        assert get_json(url + "/health")["status"] == "ok"
    if runtime != "torch":
        assert holding == []
    else:
        assert len(holding) == 1 and holding[0] != server.pid
        assert os.getpid() not in holding


@pytest.mark.slow
def test_a_worker_in_a_thread_serves_from_the_server_process(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with live_server_process(tiny_checkpoint, tmp_path / "server.log", inference_process="false") as (
        url,
        server,
    ):
        assert get_json(url + "/health")["status"] == "ok"
        # No inference process: the server process loaded the model, and torch with it.
        assert maps_torch(server.pid)
