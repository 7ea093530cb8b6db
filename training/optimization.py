"""Optimiser, learning-rate schedule and weight averaging, from the command-line arguments."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn


def make_optimizer(model: nn.Module, args: argparse.Namespace, steps: int) -> tuple[Any, Any]:
    if args.opt == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(),
            lr=args.lr,
            momentum=args.momentum,
            nesterov=args.nesterov and args.momentum > 0,
            weight_decay=args.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler: Any = None
    if args.lr_scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    elif args.lr_scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return optimizer, scheduler


def ema_with_warmup(decay: float) -> Any:
    """EMA update whose decay ramps up as (1 + n) / (10 + n) towards ``decay``.

    A fixed 0.999 from step one keeps the average near the random initial weights for
    thousands of steps: useless in a short run. The ramp (as in timm's ModelEma) lets the
    average follow the model early and smooth it late.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        step_decay = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        if averaged and torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - step_decay)
        else:  # integer buffers such as num_batches_tracked
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update
