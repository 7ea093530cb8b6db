"""The load generator: wrk, posting real Fashion-MNIST PNGs as multipart uploads (or as
Open Inference Protocol requests).

wrk is C with a LuaJIT hook (bench/post_images.lua); each request is a pre-built byte
string, so one wrk thread costs a small share of a core even at a thousand requests per
second. An async Python client cannot say the same: on these 2-core machines we
measured a bare endpoint at 95 requests/s through httpx and about 1,200 through wrk.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.uploads import multipart

LUA = Path(__file__).with_name("post_images.lua")
BOUNDARY = "fashionbenchboundary7e3c"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors, and non-2xx answers
    p50_ms: float
    p95_ms: float
    p99_ms: float
    generator_cpu_s: float  # CPU time wrk itself used
    non_2xx: int = 0  # of the errors, the answers that were not 2xx (the rest: socket errors)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def write_bodies(pngs: list[bytes], folder: Path) -> str:
    """One multipart body per image, as wrk will send it; returns the Content-Type."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, png in enumerate(pngs):
        (folder / f"{index}.bin").write_bytes(multipart(png, f"{index}.png", boundary=BOUNDARY))
    return f"multipart/form-data; boundary={BOUNDARY}"


def v2_body(png: bytes, input_name: str) -> tuple[bytes, int]:
    """An Open Inference Protocol request for one image, as Triton's client sends it: JSON,
    then the tensor as binary data. ``image``: the PNG file; ``pixels``: its 28x28 UINT8
    pixels. Returns the body and the JSON part's length."""
    import struct

    import numpy as np
    from PIL import Image

    if input_name == "image":
        tensor, shape, datatype = struct.pack("<I", len(png)) + png, [1], "BYTES"
    else:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint8)
        tensor, shape, datatype = pixels.tobytes(), [1, *pixels.shape], "UINT8"
    request = {
        "inputs": [
            {
                "name": input_name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": "class_name"}, {"name": "probabilities"}],
    }
    header = json.dumps(request).encode()
    return header + tensor, len(header)


def write_v2_bodies(pngs: list[bytes], folder: Path, input_name: str) -> str:
    """One V2 infer body per image, each with its own Inference-Header-Content-Length;
    returns the Content-Type."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, png in enumerate(pngs):
        body, header_length = v2_body(png, input_name)
        (folder / f"{index}.bin").write_bytes(body)
        (folder / f"{index}.headers").write_text(f"Inference-Header-Content-Length: {header_length}\n")
    return "application/octet-stream"


def run_wrk(
    url: str,
    connections: int,
    seconds: float,
    bodies: Path,
    content_type: str,
) -> LoadResult:
    """Drive ``url`` with ``connections`` keep-alive connections for ``seconds``."""
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_TYPE": content_type}
    # One thread: at these rates it is plenty, and it leaves the servers the other core.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(LUA), url]
    # wrk is the only child reaped meanwhile (the servers live on), so the change in the
    # children's CPU time is wrk's own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    errors = sum(report[key] for key in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        errors=errors,
        p50_ms=report["p50_us"] / 1e3,
        p95_ms=report["p95_us"] / 1e3,
        p99_ms=report["p99_us"] / 1e3,
        generator_cpu_s=cpu,
        non_2xx=report["status"],
    )


def wrk_version() -> str:
    output = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (output.stdout or output.stderr).strip().splitlines()[0]  # "wrk debian/4.1.0-3 [epoll] ..."
    return " ".join(first.split()[:2])
