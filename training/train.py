"""Train a Fashion-MNIST classifier and write a self-contained checkpoint.

    python -m training --data-dir ../shared/datasets/fashion-mnist       # default CNN
    python -m training --preset quickstart --data-dir ...                # the tutorial's MLP
    python -m training --images DIR --annotations labels.csv             # your own images

Read top to bottom: train_one_epoch, evaluate, main (arguments: training/config.py).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from models.calibration import Calibration
from models.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from models.metadata import InputSpec
from models.networks import build_model, class_probabilities, count_parameters, prepare_for_inference
from models.preprocessing import normalize
from training import report
from training.augment import random_erasing, random_hflip, random_shift
from training.calibrate import fit_scoring, scoring_figures
from training.config import ARCH_DEFAULTS, RESUME_OVERRIDES, get_args_parser, resolve_recipe
from training.data import load_data, resolve_val_size, stratified_split
from training.distributed import (
    SINGLE_PROCESS,
    World,
    all_reduce_sum,
    barrier,
    finish,
    gather_shards,
    init_distributed,
    shard,
)
from training.optimization import ema_with_warmup, make_optimizer
from training.publish import publish_output, staging_output

logger = logging.getLogger("training")
# Where runs write when --output is not given (relative to the working directory).
RUNS = Path("runs")
# A training loss this many times guessing's is divergence, not a slow start.
DIVERGED = 2.0


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"error: --device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit(f"error: --device {name}: MPS is not available on this machine; use --device cpu")
    return device


def new_run_folder(root: Path | None = None, create: bool = True) -> Path:
    """runs/<date>-<time>: a folder of its own for each run, so none overwrites another's
    model (or the shipped one); a suffix when two runs start in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = root or RUNS
    for n in itertools.count(1):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        if not create:
            return folder
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def link_latest(output: Path) -> None:
    """Point runs/latest at the folder of a run that wrote into runs/, so the commands that
    follow (serve, evaluate) can name the newest model without its date."""
    if output.parent.parent != RUNS:
        return
    link, tmp = RUNS / "latest", RUNS / f".latest-{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(output.parent.name, target_is_directory=True)
        os.replace(tmp, link)  # atomic: a reader sees the old or the new run, never none
    except OSError as exc:  # a file system without symlinks: the printed path still says where
        logger.warning("could not point %s at %s (%s)", link, output.parent, exc)


def check_divergence(train_loss: float, num_classes: int, epoch: int, args: argparse.Namespace) -> None:
    """Stop, saying what to change, when the loss is far above guessing's: the run is lost."""
    # Guessing uniformly scores ln(K); a training loss far above it only comes from steps
    # too large for the data, and such a run does not recover by itself.
    guessing = math.log(num_classes)
    if not math.isfinite(train_loss) or train_loss > DIVERGED * guessing:
        raise SystemExit(
            f"error: the training diverged in epoch {epoch + 1}: training loss {train_loss:.4g}, "
            f"worse than guessing ({guessing:.2f}); lower the learning rate, e.g. --lr {args.lr / 10:g}"
        )


def epoch_generator(args: argparse.Namespace, epoch: int) -> torch.Generator:
    """The epoch's random stream, seeded from (seed, epoch), and dropout's with it.

    A resumed run therefore replays the same order, augmentation and dropout as an
    uninterrupted one, and every rank draws the same order before taking its shard.
    """
    torch.manual_seed(args.seed * 100_003 + epoch)
    return torch.Generator().manual_seed(args.seed * 100_003 + epoch)


def check_shards(
    n: int, args: argparse.Namespace, epoch: int, device: torch.device, world: World
) -> dict[str, Any]:
    """Gather every rank's sample indices for an epoch and check they are disjoint."""
    mine = shard(torch.randperm(n, generator=epoch_generator(args, epoch)), world)
    shards = gather_shards(mine, device, world)
    seen = torch.cat(shards)
    disjoint = len(seen.unique()) == len(seen)
    if not disjoint:
        raise SystemExit("error: data-parallel ranks were given overlapping samples")
    return {"world_size": world.size, "samples_per_rank": [len(s) for s in shards], "disjoint": disjoint}


def augment(x: torch.Tensor, args: argparse.Namespace, generator: torch.Generator) -> torch.Tensor:
    x = random_shift(x, args.random_shift, generator)
    x = random_hflip(x, args.hflip, generator)
    return x


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: AveragedModel | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    input_spec: InputSpec,
    args: argparse.Namespace,
    epoch: int,
    device: torch.device,
    world: World = SINGLE_PROCESS,
) -> float:
    """One pass over this rank's share of the data in a seeded order; returns the mean loss."""
    model.train()
    generator = epoch_generator(args, epoch)
    order = shard(torch.randperm(len(images), generator=generator), world)
    batches = list(order.split(args.batch_size))
    if args.dry_run:
        batches = batches[:3]
    total, count = 0.0, 0
    bar = tqdm(
        batches, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=args.quiet or not world.is_main
    )
    for index in bar:
        x = images[index].to(device, non_blocking=True).unsqueeze(1)
        y = labels[index].to(device, non_blocking=True)
        x = augment(x, args, generator)
        x = normalize(x, input_spec.mean, input_spec.std)
        x = random_erasing(x, args.random_erasing, generator)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))  # unwrap DistributedDataParallel
        total += loss.item() * len(index)
        count += len(index)
        bar.set_postfix(loss=f"{total / count:.4f}")
    loss_sum, samples = all_reduce_sum(total, count, device=device, world=world)
    return loss_sum / max(samples, 1)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    input_spec: InputSpec,
    batch_size: int,
    device: torch.device,
    max_batches: int | None = None,
    flip_average: bool = False,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Loss, accuracy and the predictions of ``model`` on a uint8 image tensor.

    ``flip_average`` and ``temperature`` as the server predicts
    (``models.networks.class_probabilities``).
    """
    model.eval()
    loss, predictions = 0.0, []
    chunks = list(zip(images.split(batch_size), labels.split(batch_size), strict=True))
    if max_batches is not None:
        chunks = chunks[:max_batches]
    seen = 0
    for x, y in chunks:
        x = normalize(x.to(device).unsqueeze(1), input_spec.mean, input_spec.std)
        probs = class_probabilities(model, x, flip_average, temperature)
        y = y.to(device)
        loss += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").item()
        predictions.append(probs.argmax(1).cpu())
        seen += len(y)
    predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)
    correct = int((predicted == labels[:seen]).sum())
    return {
        "loss": loss / max(seen, 1),
        "accuracy": correct / max(seen, 1),
        "predictions": predicted,
        "count": seen,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train, select on validation, evaluate the test set once, write checkpoint and report."""
    started = time.perf_counter()
    resume_state: dict[str, Any] | None = None
    if args.resume:
        saved, _ = read_checkpoint(args.resume)
        if not isinstance(saved, dict) or "training_state" not in saved:
            raise SystemExit(f"error: {args.resume}: not a resumable checkpoint (no training state)")
        resume_state = saved
        kept = {k: getattr(args, k) for k in RESUME_OVERRIDES}
        # Defaults first, so a file written before a flag existed still resumes.
        defaults = vars(get_args_parser().parse_args([]))
        args = argparse.Namespace(**{**defaults, **saved["train_args"], **kept})
    if args.dry_run:
        args.epochs = 1
    if args.flip_average is None:
        args.flip_average = args.hflip > 0  # written out, like model_args
    world, device = init_distributed(select_device(args.device))
    if not world.is_main:
        logger.setLevel(logging.WARNING)  # one voice: rank 0 logs
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.threads or max(1, cores // world.local_size))

    data = load_data(args)
    images, labels = data["train"]
    classes: list[str] = data["classes"]
    val_size = resolve_val_size(args.val_size, custom=bool(args.images))
    train_idx, val_idx = stratified_split(labels, val_size, args.seed)
    train_images, train_labels = images[train_idx], labels[train_idx]
    data["train_split"] = (train_images, train_labels)  # on the CPU: the out-of-distribution fit
    resolve_recipe(args, len(train_images))
    # After the data, so a data error leaves no empty run folder; before the training, so an
    # output that cannot be written is found now, not after it.
    if args.repository is not None and (args.output is None or not args.resume):
        args.output = str(staging_output(args, world.is_main))  # written out, as below
    if args.output is None:  # written out, so a resumed run writes to the same place
        args.output = str(new_run_folder(create=world.is_main) / "model.pth")
    output = Path(args.output)
    if world.is_main:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SystemExit(
                f"error: --output {output}: cannot create {output.parent} ({exc.strerror})"
            ) from None
    resume_path = report.companion(output, ".resume.pth")
    val_images, val_labels = images[val_idx], labels[val_idx]
    if args.normalize:
        pixels = train_images.to(torch.float64) / 255
        # Pictures that are all alike have no spread to divide by: leave their scale alone.
        std = round(float(pixels.std()), 4) or 1.0
        input_spec = InputSpec(mean=(round(float(pixels.mean()), 4),), std=(std,))
    else:
        input_spec = InputSpec(mean=(0.0,), std=(1.0,))
    train_images, train_labels = train_images.to(device), train_labels.to(device)

    torch.manual_seed(args.seed)
    # Written out in full into the checkpoint, so it never depends on a default that changes.
    model_args = {**ARCH_DEFAULTS.get(args.arch, {}), **args.model_args, "num_classes": len(classes)}
    model = build_model(args.arch, **model_args).to(device)
    model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if world.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    steps_per_epoch = math.ceil(len(train_images) // world.size / args.batch_size)
    if args.dry_run:
        steps_per_epoch = min(steps_per_epoch, 3)
    optimizer, scheduler = make_optimizer(model, args, args.epochs * steps_per_epoch)
    ema = None
    if args.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(args.ema_decay), use_buffers=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"accuracy": -1.0, "epoch": -1, "state_dict": None}
    start_epoch, elapsed_before = 0, 0.0
    if resume_state is not None:
        model.load_state_dict(resume_state["state_dict"])
        state = resume_state["training_state"]
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history, best = state["history"], state["best"]
        start_epoch, elapsed_before = state["epoch"], state["elapsed_s"]
        logger.info("resuming %s at epoch %d of %d", args.resume, start_epoch + 1, args.epochs)
    logger.info(
        "training %s (%d parameters) on %s with %d threads: %d train, %d validation images",
        args.arch,
        count_parameters(model),
        device,
        torch.get_num_threads(),
        len(train_images),
        len(val_images),
    )
    eval_model: nn.Module = ema.module if ema is not None else model

    def save_resume(epoch: int) -> None:
        state = {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "history": history,
            "best": best,
            "elapsed_s": elapsed_before + time.perf_counter() - started,
        }
        save_checkpoint(
            make_checkpoint(
                model, args.arch, model_args, classes, input_spec, train_args=vars(args), training_state=state
            ),
            resume_path,
        )

    limit = 2 if args.dry_run else None
    parallel = (
        check_shards(len(train_images), args, start_epoch, device, world) if world.distributed else None
    )
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            if world.is_main:
                save_resume(epoch)
            epoch_start = time.perf_counter()
            train_loss = train_one_epoch(
                train_model,
                criterion,
                optimizer,
                scheduler,
                ema,
                train_images,
                train_labels,
                input_spec,
                args,
                epoch,
                device,
                world,
            )
            check_divergence(train_loss, len(classes), epoch, args)
            if not world.is_main:
                continue  # the other ranks go on training; rank 0 catches up at the next all-reduce
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": optimizer.param_groups[0]["lr"],
            }
            if len(val_images):
                val = evaluate(
                    eval_model,
                    val_images,
                    val_labels,
                    input_spec,
                    args.eval_batch_size,
                    device,
                    limit,
                    args.flip_average,
                )
                record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                # A tie goes to the later epoch: on a small validation split many epochs
                # score 100%, and the later ones have trained longer at a lower rate.
                if val["accuracy"] >= best["accuracy"]:
                    weights = {k: v.detach().cpu().clone() for k, v in eval_model.state_dict().items()}
                    best = {"accuracy": val["accuracy"], "epoch": epoch + 1, "state_dict": weights}
            record["seconds"] = time.perf_counter() - epoch_start
            history.append(record)
            logger.info(
                "epoch %d/%d  train loss %.4f  val loss %s  val acc %s  lr %.2e  %.1fs",
                epoch + 1,
                args.epochs,
                train_loss,
                f"{record['val_loss']:.4f}" if "val_loss" in record else "-",
                f"{record['val_accuracy']:.4f}" if "val_accuracy" in record else "-",
                record["lr"],
                record["seconds"],
            )
    except KeyboardInterrupt:
        # The resume file holds the state at the start of this epoch: resuming replays it.
        if world.is_main:
            hint = f"continue with python -m training --resume {resume_path}"
            print(f"\ninterrupted in epoch {epoch + 1}: {hint}", file=sys.stderr)
        raise SystemExit(130) from None

    metrics: dict[str, Any] = {}
    if world.is_main:
        if best["state_dict"] is not None:
            eval_model.load_state_dict(best["state_dict"])
        train_seconds = elapsed_before + time.perf_counter() - started
        metrics = finish_run(
            args,
            data,
            (val_images, val_labels),
            eval_model,
            model_args,
            classes,
            input_spec,
            best,
            history,
            train_seconds,
            device,
            output,
            parallel,
        )
        resume_path.unlink(missing_ok=True)
        if args.repository is not None:
            output = publish_output(args, output)
            print(
                f"model written to {output}, version {output.parent.name} of {args.model_name}; serve it "
                f"with FASHION_MODEL_REPOSITORY={args.repository}, or load it into a running server with "
                f"POST /v2/repository/models/{args.model_name}/load"
            )
        else:
            link_latest(output)
            serve = f"FASHION_MODEL_PATH={output} .venv/bin/fashion-serve"
            print(f"model written to {output}; serve it with: {serve}")
    barrier(world)
    finish(world)
    return metrics


def finish_run(
    args: argparse.Namespace,
    data: dict[str, Any],
    validation: tuple[torch.Tensor, torch.Tensor],
    eval_model: nn.Module,
    model_args: dict[str, Any],
    classes: list[str],
    input_spec: InputSpec,
    best: dict[str, Any],
    history: list[dict[str, Any]],
    train_seconds: float,
    device: torch.device,
    output: Path,
    parallel: dict[str, Any] | None,
) -> dict[str, Any]:
    """Evaluate the selected weights on the test set once; write checkpoint, metrics and plots."""
    test, split_name = data["test"], "test"
    if test is None or args.skip_test:
        test, split_name = validation, "validation"
        logger.warning("no test set used: the final report is on the validation split")
    limit = 2 if args.dry_run else None
    # Calibration and the score are fitted, and reported, on the network exactly as the
    # server runs it (batch norm folded).
    served_model = build_model(args.arch, **model_args).to(device)
    served_model.load_state_dict(eval_model.state_dict())
    served_model = prepare_for_inference(served_model)
    calibration, ood, scoring = Calibration(), None, {}
    if len(validation[1]) > 0:
        calibration, ood, scoring = fit_scoring(
            served_model, input_spec, args.flip_average, data["train_split"], validation
        )
    temperature = calibration.temperature
    result = evaluate(
        eval_model,
        test[0],
        test[1],
        input_spec,
        args.eval_batch_size,
        device,
        limit,
        args.flip_average,
        temperature,
    )
    served = scoring_figures(
        served_model,
        input_spec,
        args.flip_average,
        calibration,
        ood,
        test[0][: result["count"]],
        test[1][: result["count"]],
    )
    scoring.update({f"test_{k}": round(v, 4) for k, v in served.items() if isinstance(v, float)})
    matrix = report.confusion_matrix(test[1][: result["count"]], result["predictions"], len(classes))
    metrics = {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "test_split": split_name,
        "test_count": result["count"],
        "val_accuracy": best["accuracy"] if best["epoch"] > 0 else None,
        "best_epoch": best["epoch"] if best["epoch"] > 0 else len(history),
        "epochs": len(history),
        "per_class_accuracy": report.per_class_accuracy(matrix, classes),
        "train_seconds": round(train_seconds, 1),
        "machine": report.machine_info(device),
        "calibration": scoring,
    }
    if parallel is not None:
        metrics["data_parallel"] = parallel
    logger.info(
        "%s accuracy %.4f, loss %.4f (best epoch %d, %.0fs)",
        split_name,
        result["accuracy"],
        result["loss"],
        metrics["best_epoch"],
        train_seconds,
    )
    # The shipped checkpoint carries the selected (averaged) weights and no optimizer state.
    final = build_model(args.arch, **model_args)
    final.load_state_dict(eval_model.state_dict())
    checkpoint = make_checkpoint(
        final,
        args.arch,
        model_args,
        classes,
        input_spec,
        metrics,
        vars(args),
        flip_average=args.flip_average,
        calibration=calibration if len(validation[1]) > 0 else None,
        ood=ood,
    )
    save_checkpoint(checkpoint, output)
    report.write_report(output, metrics, matrix, classes, history, f"{args.arch}, {split_name} set")
    report.plot_reliability(
        served["bins_uncalibrated"],
        served["bins"],
        f"{split_name} set: ECE {served['ece_uncalibrated']:.4f}, calibrated {served['ece']:.4f}",
        report.companion(output, "_reliability.png"),
    )
    logger.info("wrote %s and its metrics and plots", output)
    return metrics
