"""The context of the serving figures: the machine, and the model's offline speed."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.load import wrk_version


def machine_info() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for package in (
        "torch",
        "openvino",
        "onnxruntime",
        "fastapi",
        "starlette",
        "uvicorn",
        "litserve",
        "pillow",
        "python-multipart",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        # uvicorn picks these up when installed, for every server here alike.
        "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
        "wrk": wrk_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def offline_speed(model_path: str) -> dict[str, Any]:
    """Images/s of the served prediction on one thread and on all cores, for each runtime
    installed, and its FLOPs per image.

    Served: batch norm folded, the temperature folded in, each image averaged with its mirror
    when the checkpoint asks for it (two forward images per image), the calibrated softmax and
    the out-of-distribution score: the whole graph a runtime executes. ``threads_N`` holds the
    figures of the runtime the server picks by default (``served_runtime``).
    """
    import torch

    from app.inference.served_model import EXPORT_RUNTIMES
    from app.predictor import Predictor
    from bench.model_speed import conv_macs, measure
    from models.checkpoint import load_checkpoint

    loaded = load_checkpoint(model_path)
    passes = 2 if loaded.flip_average else 1
    macs = passes * conv_macs(loaded.model.eval())
    served = Predictor.load(model_path, device="cpu", runtime="auto").runtime
    result: dict[str, Any] = {
        "macs": macs,
        "flops": 2 * macs,
        "flip_average": loaded.flip_average,
        "served_runtime": served,
        "runtimes": {},
    }
    for threads in (1, os.cpu_count() or 1):
        torch.set_num_threads(threads)
        for runtime in ("torch", *EXPORT_RUNTIMES):
            try:
                predictor = Predictor.load(model_path, device="cpu", runtime=runtime)
            except Exception as exc:  # not installed, or refused: the report says so
                result["runtimes"].setdefault(runtime, {})["error"] = str(exc)
                continue
            runner: Any = predictor.runner
            speeds = {batch: measure(runner, batch, 2.0, channels_last=False)[1] for batch in (1, 32, 256)}
            result["runtimes"].setdefault(runtime, {})[f"threads_{threads}"] = {"images_per_s": speeds}
        a = torch.randn(1024, 1024)
        # The best of many: noise only ever slows a run down.
        best = min(_timed(lambda a=a: torch.mm(a, a)) for _ in range(100))
        result[f"threads_{threads}"] = {
            "images_per_s": result["runtimes"][served][f"threads_{threads}"]["images_per_s"],
            "matmul_gflops": 2 * 1024**3 / best / 1e9,
        }
    return result


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
