"""What a training run writes beside the checkpoint: metrics JSON and three PNGs."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    index = targets.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor, classes: list[str]) -> dict[str, float]:
    totals = matrix.sum(dim=1).clamp(min=1)
    return {name: int(matrix[i, i]) / int(totals[i]) for i, name in enumerate(classes)}


def top_confusions(matrix: torch.Tensor, classes: list[str], k: int = 5) -> list[dict[str, Any]]:
    """The k most frequent (true, predicted) mistakes."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(k, off.numel()))
    n = len(classes)
    return [
        {"true": classes[int(i) // n], "predicted": classes[int(i) % n], "count": int(v)}
        for v, i in zip(values, flat, strict=True)
        if int(v) > 0
    ]


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def plot_confusion(
    matrix: torch.Tensor, classes: list[str], title: str, path: str | os.PathLike[str]
) -> None:
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max().item() / 2
    for i in range(len(classes)):
        for j in range(len(classes)):
            value = int(matrix[i, j])
            color = "white" if value > threshold else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(
    before: list[dict[str, float]], after: list[dict[str, float]], title: str, path: str | os.PathLike[str]
) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, before and after calibration."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for bins, label, marker in ((before, "uncalibrated", "s"), (after, "calibrated", "o")):
        used = [b for b in bins if b["count"] > 0]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker=marker, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in the bin")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    if any(h.get("val_loss") is not None for h in history):
        loss_ax.plot(epochs, [h.get("val_loss") for h in history], label="validation")
        acc_ax.plot(epochs, [h.get("val_accuracy") for h in history], label="validation")
        acc_ax.legend()
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def companion(output: Path, suffix: str) -> Path:
    """A file written beside the checkpoint: models/model.pth -> models/model<suffix>."""
    return output.with_name(output.stem + suffix)


def write_report(
    output: Path,
    metrics: dict[str, Any],
    matrix: torch.Tensor,
    classes: list[str],
    history: list[dict[str, Any]],
    title: str,
) -> None:
    """The metrics JSON and the two PNGs beside the checkpoint."""
    write_json(
        {
            **metrics,
            "classes": classes,
            "confusion_matrix": matrix.tolist(),
            "top_confusions": top_confusions(matrix, classes),
            "history": history,
        },
        companion(output, "_metrics.json"),
    )
    accuracy = metrics["test_accuracy"]
    plot_confusion(matrix, classes, f"{title}: accuracy {accuracy:.4f}", companion(output, "_confusion.png"))
    plot_curves(history, companion(output, "_curves.png"))
