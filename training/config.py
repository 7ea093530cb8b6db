"""Command-line arguments of the training job, and the named presets."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from models.networks import ARCHITECTURES, DEFAULT_ARCH
from training.data import DEFAULT_CACHE_DIR
from training.publish import model_name

# The training job's network arguments for each architecture, under any --model-args.
# The CNN's head keeps a 7x7 layout: at 10 epochs it matched global pooling's validation
# accuracy (92.62% against 92.60%) at a lower validation loss (0.198 against 0.211).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {"cnn": {"head_pool": 7}}

# The PyTorch quickstart tutorial, exactly: its MLP, SGD at 1e-3, batch 64, 5 epochs,
# ToTensor() only, all 60,000 training images.
PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": {
        "arch": "mlp",
        "opt": "sgd",
        "lr": 1e-3,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": 5,
        "lr_scheduler": "none",
        "label_smoothing": 0.0,
        "random_shift": 0,
        "hflip": 0.0,
        "random_erasing": 0.0,
        "ema_decay": 0.0,
        "normalize": False,
        "val_size": 0,
    },
}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# A small training set (fewer than SMALL_DATA images) trains with smaller batches and
# steps: with batches of 128 an epoch of a few hundred images is 2 or 3 steps, the
# one-cycle warm-up lasts a few dozen, and the run diverged at a learning rate of 0.02.
SMALL_DATA = 4096
FULL_RECIPE = {"batch_size": 128, "lr": 0.1}
SMALL_RECIPE = {"batch_size": 32, "lr": 0.01}
# Arguments that may differ when a run is resumed; everything else comes from the file.
RESUME_OVERRIDES = ("resume", "quiet", "device", "threads")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its real default; on/off flags and defaults the help
    explains itself (a None that means "inferred") show none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "%(default)" in text
            or "default:" in text
            or not action.option_strings
            or action.default in (None, argparse.SUPPRESS)
            or action.nargs == 0  # --dry-run, --no-verify: off unless given
        ):
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(
    kind: Callable[[str], Any], minimum: float, maximum: float = math.inf, below: bool = False,
    above: bool = False,
) -> Callable[[str], Any]:  # fmt: skip
    """An argparse type: ``kind`` from ``minimum`` (excluded if ``above``) to ``maximum``
    (excluded if ``below``), with an error that says so."""
    lower = f"above {minimum:g}" if above else f"of at least {minimum:g}"
    upper = f"below {maximum:g}" if below else (f"at most {maximum:g}" if maximum < math.inf else "")
    expected = f"{'a whole number' if kind is int else 'a number'} {lower}"
    expected += f" and {upper}" if upper else ""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
        in_range = (value > minimum if above else value >= minimum) and (
            value < maximum if below else value <= maximum
        )
        if not in_range:  # NaN included: every comparison with it is false
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    return parse


def resolve_recipe(args: argparse.Namespace, train_images: int) -> None:
    """Fill in --batch-size and --lr left to their defaults, from the training set's size.

    Written into ``args``, so the checkpoint records what was used and --resume reuses it.
    """
    recipe = SMALL_RECIPE if train_images < SMALL_DATA else FULL_RECIPE
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def val_size(text: str) -> int | float | str:
    """``--val-size``: auto, a count (500), a fraction (0.1) or a percentage (10%)."""
    expected = "expected auto, a number of images (500), a fraction below 1 (0.1) or a percentage (10%)"
    text = text.strip()
    if text == "auto":
        return text
    try:
        if text.endswith("%"):
            value: int | float = float(text[:-1]) / 100
        elif text.isdigit():
            value = int(text)
        else:
            value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {expected}") from None
    if isinstance(value, float) and not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: {expected}")
    return value


def model_args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a JSON object, such as '{{\"widths\": [16, 32]}}'"
        )
    return value


def device(text: str) -> str:
    if not _DEVICE.fullmatch(text.strip().lower()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda, cuda:N (N a GPU index) or mps")
    return text.strip().lower()


POSITIVE = _number(int, 1)
NON_NEGATIVE = _number(int, 0)
PROBABILITY = _number(float, 0, 1)


def get_args_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m training",
        description="Train an image classifier on Fashion-MNIST or on your own labelled images, "
        "and write one self-contained checkpoint",
        formatter_class=HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        default="data/fashion-mnist",
        help="folder holding (or receiving, with --download) the four Fashion-MNIST .gz files; only read",
    )
    data.add_argument("--download", action="store_true", help="fetch missing .gz files into --data-dir")
    data.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the MD5 check of the .gz files (re-packed or synthetic copies)",
    )
    data.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help="writable folder for the extracted IDX files"
    )
    data.add_argument(
        "--images",
        help="train on your own images: the folder they are in (default: none, train on Fashion-MNIST)",
    )
    data.add_argument(
        "--annotations",
        help="CSV of filename,label rows for --images; a label is a class name or index (default: none)",
    )
    data.add_argument(
        "--test-annotations",
        help="CSV of held-out images in --images, for the final report "
        "(default: none, report on the validation split)",
    )
    data.add_argument(
        "--classes",
        help='class names in index order, comma-separated: "shoe, handbag, pants" (default: the label '
        "names in --annotations, sorted; Fashion-MNIST's ten when the labels are indices)",
    )
    data.add_argument(
        "--val-size",
        type=val_size,
        default="auto",
        help="images held out of training, per class, to pick the best epoch: a count (500), a fraction "
        "(0.1) or a percentage (10%%); auto: 5000 of Fashion-MNIST, 10%% of your own images, at least "
        "one per class",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--arch", default=DEFAULT_ARCH, choices=sorted(ARCHITECTURES), help="the network")
    model.add_argument(
        "--model-args",
        type=model_args,
        default={},
        help="JSON keyword arguments for the network, e.g. '{\"widths\": [16, 32]}'",
    )

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=POSITIVE, default=40, help="passes over the training images")
    opt.add_argument(
        "--batch-size",
        type=POSITIVE,
        help=f"images per step (default: {FULL_RECIPE['batch_size']}; {SMALL_RECIPE['batch_size']} when "
        f"there are fewer than {SMALL_DATA:,} training images)",
    )
    opt.add_argument("--opt", default="sgd", choices=["sgd", "adamw"], help="the optimiser")
    opt.add_argument(
        "--lr",
        type=_number(float, 0, 10, above=True),
        help=f"peak learning rate (default: {FULL_RECIPE['lr']}; {SMALL_RECIPE['lr']} when there are fewer "
        f"than {SMALL_DATA:,} training images)",
    )
    opt.add_argument("--momentum", type=_number(float, 0, 1, below=True), default=0.9, help="SGD momentum")
    opt.add_argument("--no-nesterov", dest="nesterov", action="store_false", help="plain SGD momentum")
    opt.add_argument("--weight-decay", type=_number(float, 0, 1), default=5e-4, help="L2 penalty")
    opt.add_argument(
        "--lr-scheduler",
        default="onecycle",
        choices=["onecycle", "cosine", "none"],
        help="learning-rate schedule",
    )
    opt.add_argument(
        "--label-smoothing", type=_number(float, 0, 1, below=True), default=0.1, help="of the targets"
    )
    opt.add_argument(
        "--ema-decay",
        type=_number(float, 0, 1, below=True),
        default=0.999,
        help="weight averaging per step; 0 turns it off",
    )

    aug = parser.add_argument_group("augmentation")
    aug.add_argument("--random-shift", type=_number(int, 0, 14), default=2, help="max shift in pixels")
    aug.add_argument("--hflip", type=PROBABILITY, default=0.5, help="probability of a mirror image")
    aug.add_argument("--random-erasing", type=PROBABILITY, default=0.25, help="probability per image")
    aug.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="predict each image as the mean of it and its mirror image, in validation, test and "
        "serving (default: on when --hflip > 0)",
    )
    aug.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="feed 0..1 pixels (the tutorial's ToTensor) instead of mean/std normalised",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--preset", choices=sorted(PRESETS), help="a named set of the defaults above (default: none)"
    )
    run.add_argument(
        "--output",
        help="checkpoint to write; its metrics and plots go beside it (default: "
        "runs/<date>-<time>/model.pth, a new folder each run; never the shipped models/model.pth "
        "unless named)",
    )
    run.add_argument(
        "--repository",
        help="a model repository to publish into, as the next version of --model-name: "
        "<repository>/<model name>/<version>/model.pth, written atomically (default: none; see --output)",
    )
    run.add_argument(
        "--model-name",
        type=model_name,
        default="fashion-mnist",
        help="the model's name in --repository (default: fashion-mnist)",
    )
    run.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps",
    )
    run.add_argument(
        "--threads", type=NON_NEGATIVE, default=0, help="CPU threads; 0 = every core this process may use"
    )
    run.add_argument("--seed", type=NON_NEGATIVE, default=0, help="for weights, split, order, augmentation")
    run.add_argument(
        "--resume",
        help="continue the run saved in this file, written each epoch as *.resume.pth (default: none)",
    )
    run.add_argument("--eval-batch-size", type=POSITIVE, default=1000, help="images per evaluation step")
    run.add_argument(
        "--skip-test",
        action="store_true",
        help="never touch the test set: report on the validation split (for ablations)",
    )
    run.add_argument("--dry-run", action="store_true", help="a few batches and one evaluation")
    run.add_argument("--quiet", action="store_true", help="no progress bars: log lines only")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, letting a --preset change the defaults while explicit flags still win."""
    parser = get_args_parser()
    known, _ = parser.parse_known_args(argv)
    if known.preset:
        parser.set_defaults(**PRESETS[known.preset])
    args = parser.parse_args(argv)
    if bool(args.images) != bool(args.annotations):
        parser.error("--images and --annotations go together: the folder of images and its CSV")
    if not args.images and (args.classes or args.test_annotations):
        parser.error("--classes and --test-annotations go with --images and --annotations")
    return args
