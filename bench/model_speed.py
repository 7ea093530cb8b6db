"""Offline inference speed of a checkpoint on ONE CPU thread, as the serving budget asks.

    python -m bench.model_speed --model models/model.pth

Reports the median latency at batch 1 and images/s at batch 1, 32 and 256, for the model
as trained, with batch norm folded into the convolutions, and folded with channels-last
weights and inputs, and, for a checkpoint that asks for it, that plus flip averaging (each
image and its mirror in one pass of twice the batch), plus calibration and the
out-of-distribution score (what the server runs), and that whole graph exported to ONNX
and run by OpenVINO and by ONNX Runtime (``FASHION_RUNTIME=auto`` serves with the first
that agrees), with the tutorial's MLP as the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from app.inference.served_model import EXPORT_RUNTIMES
from app.predictor import Predictor
from models.checkpoint import load_checkpoint
from models.errors import CheckpointError
from models.export import ServingGraph
from models.networks import (
    CNN,
    build_model,
    count_parameters,
    prepare_for_inference,
    to_channels_last,
)

# What is timed: a module, or a runtime's runner (app.runtime); each is called on a batch.
Model = Callable[[torch.Tensor], object]


def conv_macs(model: nn.Module) -> int:
    """Multiply-adds per image of the convolutions and linear layers."""
    total = 0

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_pixel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_pixel
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28))
    for handle in handles:
        handle.remove()
    return total


@torch.inference_mode()
def measure(model: Model, batch: int, seconds: float, channels_last: bool) -> tuple[float, float]:
    """(median ms per call, images per second) over about ``seconds`` of calls."""
    x = torch.randn(batch, 1, 28, 28)
    if channels_last:
        x = to_channels_last(x)
    for _ in range(10):
        model(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median * 1e3, batch / median


@torch.inference_mode()
def paired(a: Model, b: Model, batch: int, seconds: float, rounds: int = 21) -> tuple[float, float, float]:
    """b's time over a's, measured in alternating short rounds so that drift in the machine's
    speed hits both alike: (median ratio, a's median ms, b's median ms)."""
    x = to_channels_last(torch.randn(batch, 1, 28, 28))
    ratios, times_a, times_b = [], [], []
    for _ in range(rounds):
        medians = []
        for model in (a, b):
            for _ in range(5):
                model(x)
            times = []
            deadline = time.perf_counter() + seconds / rounds
            while time.perf_counter() < deadline or len(times) < 5:
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times))
        times_a.append(medians[0])
        times_b.append(medians[1])
        ratios.append(medians[1] / medians[0])
    return statistics.median(ratios), statistics.median(times_a) * 1e3, statistics.median(times_b) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description="One-thread inference speed of a checkpoint")
    parser.add_argument("--model", default="models/model.pth")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_checkpoint(args.model)
    # name: (model, whether its inputs are channels-last)
    variants: dict[str, tuple[Model, bool]] = {
        "tutorial MLP (baseline)": (build_model("mlp").eval(), False),
        f"{loaded.arch} as trained": (loaded.model.eval(), False),
    }
    fused = load_checkpoint(args.model).model.eval()
    if isinstance(fused, CNN):
        variants[f"{loaded.arch}, batch norm folded"] = (fused.fuse_for_inference(), False)
    served = prepare_for_inference(load_checkpoint(args.model).model)
    # The served function is models.export.ServingGraph, as the server builds it.
    plain: Model = ServingGraph(served, loaded.flip_average, None, 1.0)
    if loaded.flip_average:
        variants[f"{loaded.arch}, folded, channels-last"] = (served, True)
        variants[f"{loaded.arch}, folded, channels-last, flip-averaged (served)"] = (plain, True)
    else:
        variants[f"{loaded.arch}, folded, channels-last (served)"] = (plain, True)
    scored: Model | None = None
    if loaded.ood is not None:
        name = f"{loaded.arch}, as served, + calibration and out-of-distribution score"
        temperature = loaded.calibration.temperature
        folded = prepare_for_inference(load_checkpoint(args.model).model, temperature)
        scored = ServingGraph(folded, loaded.flip_average, loaded.ood, temperature)
        variants[name] = (scored, True)
    served_runtime = None  # auto's choice: the first of these, in this order, that serves
    labels = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
    for runtime in EXPORT_RUNTIMES:
        try:
            exported = Predictor.load(args.model, device="cpu", runtime=runtime)  # type: ignore[arg-type]
        except CheckpointError as exc:  # not installed, or its export refused: said, not timed
            print(f"{runtime}: {exc}")
            continue
        served_runtime = served_runtime or runtime
        # The whole served graph, one call.
        served = " (what auto serves)" if runtime == served_runtime else ""
        variants[f"{loaded.arch}, the served graph exported, in {labels[runtime]}{served}"] = (
            exported.runner,
            False,
        )
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    macs = conv_macs(loaded.model) / 1e6
    print(f"{loaded.path}: {count_parameters(loaded.model)} parameters, {macs:.1f}M multiply-adds per image")
    print("| model | batch 1 median ms | batch 1 img/s | batch 32 img/s | batch 256 img/s |")
    print("| --- | --- | --- | --- | --- |")
    baseline32 = None
    per_image: dict[str, float] = {}
    for name, (model, channels_last) in variants.items():
        ms1, ips1 = measure(model, 1, args.seconds, channels_last)
        _, ips32 = measure(model, 32, args.seconds, channels_last)
        _, ips256 = measure(model, 256, args.seconds, channels_last)
        baseline32 = baseline32 or ips32
        per_image[name] = 1e3 / ips32
        print(f"| {name} | {ms1:.2f} | {ips1:.0f} | {ips32:.0f} ({ips32 / baseline32:.2f}x) | {ips256:.0f} |")
    if scored is not None:
        for batch in (1, 32):
            ratio, plain_ms, scored_ms = paired(plain, scored, batch, args.seconds)
            print(
                f"calibration and the out-of-distribution score, batch {batch}: {scored_ms / batch:.3f} "
                f"against {plain_ms / batch:.3f} ms per image (interleaved; median ratio {ratio:.3f}x)"
            )


if __name__ == "__main__":
    main()
