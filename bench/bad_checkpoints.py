"""Bad checkpoints: ``fashion-serve`` must refuse each before it opens a port, in one line.

Variants of the shipped checkpoint, each broken in one field (normalisation, model
arguments, class names, weights), plus a pickle that would run code and a truncated file.
Each is served with ``python -m app.serve``: the pass is exit status 2 with one line on
stderr that names the file, and no code run.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.server_process import free_port
from models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
MARKER = "ran-code"  # what the malicious pickle would create, if it ran


@dataclass
class CheckpointCase:
    name: str
    why: str
    status: int | None  # fashion-serve's exit status; None: still running after the timeout
    seconds: float
    stderr: str
    ran_code: bool

    @property
    def ok(self) -> bool:
        lines = self.stderr.strip().splitlines()
        return self.status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not self.ran_code


class _RunsCode:
    """Unpickled, it would create ``marker``: the proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _variants() -> list[tuple[str, str, Callable[[dict[str, Any]], Any]]]:
    def nan_weights(raw: dict[str, Any]) -> None:
        name = next(key for key in raw["state_dict"] if key.endswith("weight"))
        raw["state_dict"][name] = torch.full_like(raw["state_dict"][name], float("nan"))

    return [
        ("std-zero", "input.std [0]", lambda raw: raw["input"].__setitem__("std", [0.0])),
        ("mean-nan", "input.mean [nan]", lambda raw: raw["input"].__setitem__("mean", [float("nan")])),
        (
            "width-negative",
            "model_args widths [-1, 48]",
            lambda raw: raw["model_args"].__setitem__("widths", [-1, 48]),
        ),
        (
            "hidden-huge",
            "arch mlp with hidden 10^7: 31 GB if it were built",
            lambda raw: raw.update(arch="mlp", model_args={"hidden": 10**7}),
        ),
        (
            "nine-classes",
            "9 class names for 10 outputs",
            lambda raw: raw.__setitem__("classes", raw["classes"][:9]),
        ),
        ("nan-weights", "a layer's weights all NaN", nan_weights),
    ]


def bad_checkpoints(model: Path, workdir: Path, timeout_s: float = 120.0) -> list[CheckpointCase]:
    folder = workdir / "bad-checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    raw = torch.load(model, weights_only=True)
    files: list[tuple[str, str, Path]] = []
    for name, why, edit in _variants():
        broken = copy.deepcopy(raw)
        edit(broken)
        save_checkpoint(broken, folder / f"{name}.pth")
        files.append((name, why, folder / f"{name}.pth"))
    (folder / "runs-code.pth").write_bytes(pickle.dumps({"format": _RunsCode(folder / MARKER)}))
    files.append(("runs-code", "a pickle that would run a shell command", folder / "runs-code.pth"))
    data = model.read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    files.append(("truncated", "the shipped file cut in half", folder / "truncated.pth"))
    results = []
    for name, why, path in files:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
        env |= {"FASHION_MODEL_PATH": str(path), "FASHION_DEVICE": "cpu"}
        command = [sys.executable, "-m", "app.serve", "--port", str(free_port())]
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
            )
            status, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired as exc:
            output = exc.stderr or b""
            status, stderr = None, output.decode(errors="replace") if isinstance(output, bytes) else output
        seconds = time.monotonic() - started
        results.append(CheckpointCase(name, why, status, seconds, stderr, (folder / MARKER).exists()))
        print(f"  checkpoint {name}: exit {status} after {seconds:.1f} s: {stderr.strip()[:160]}", flush=True)
    return results
