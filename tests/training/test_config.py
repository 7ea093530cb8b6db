"""The training command line: true help, one-line errors for every bad value."""

from __future__ import annotations

import argparse

import pytest

from training import evaluate, sample_images
from training.config import get_args_parser, parse_args


def option_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize(
    "parser", [get_args_parser(), evaluate.get_args_parser(), sample_images.get_args_parser()],
    ids=["training", "evaluate", "sample_images"],
)  # fmt: skip
def test_help_names_the_command_and_every_default_truly(parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert text.startswith(f"usage: {parser.prog} ")
    assert parser.prog.startswith("python -m training")
    assert "__main__" not in text and "(default: None)" not in text
    for action in option_actions(parser):
        help_text = parser._get_formatter()._expand_help(action) if action.help else ""
        if action.nargs == 0:  # an on/off flag: off unless given, and its help never says True
            assert "(default: True)" not in help_text and "(default: False)" not in help_text, action.dest
        else:
            assert "default:" in help_text, f"{action.option_strings[0]} shows no default"
        # A default shown by the formatter is the value the parser really uses.
        if action.default is not None and action.nargs != 0 and "%(default)" not in (action.help or ""):
            shown = help_text.rsplit("(default: ", 1)[-1]
            assert shown.startswith(str(action.default)) or "; " in shown, action.dest


def test_the_training_help_shows_the_recipe_defaults() -> None:
    text = " ".join(get_args_parser().format_help().split())
    assert "--epochs EPOCHS passes over the training images (default: 40)" in text
    assert "(default: 128; 32 when there are fewer than 4,096 training images)" in text
    assert "(default: 0.1; 0.01 when there are fewer than 4,096 training images)" in text
    assert "runs/<date>-<time>/model.pth" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "argument --epochs: '0': expected a whole number of at least 1"),
        (["--epochs", "ten"], "argument --epochs: 'ten': expected a whole number of at least 1"),
        (["--batch-size", "-4"], "argument --batch-size: '-4': expected a whole number of at least 1"),
        (["--lr", "0"], "argument --lr: '0': expected a number above 0 and at most 10"),
        (["--lr", "nan"], "argument --lr: 'nan': expected a number above 0"),
        (["--hflip", "1.5"], "argument --hflip: '1.5': expected a number of at least 0 and at most 1"),
        (["--momentum", "1"], "argument --momentum: '1': expected a number of at least 0 and below 1"),
        (["--ema-decay", "-0.1"], "argument --ema-decay: '-0.1': expected a number of at least 0"),
        (
            ["--val-size", "1.5"],
            "argument --val-size: '1.5': expected auto, a number of images (500), a fraction",
        ),
        (["--val-size", "-3"], "argument --val-size: '-3': expected auto"),
        (["--val-size", "lots"], "argument --val-size: 'lots': expected auto"),
        (["--model-args", "[1]"], "argument --model-args: '[1]': expected a JSON object"),
        (["--model-args", "{oops"], "argument --model-args: '{oops': expected a JSON object"),
        (["--device", "gpu"], "argument --device: 'gpu': expected auto, cpu, cuda, cuda:N"),
        (["--threads", "-1"], "argument --threads: '-1': expected a whole number of at least 0"),
        (["--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
        (["--images", "x"], "--images and --annotations go together"),
        (["--classes", "a,b"], "--classes and --test-annotations go with --images and --annotations"),
        (["--epochs"], "argument --epochs: expected one argument"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_and_what_it_takes(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m training: error: ")
    assert message in err
    assert err.rstrip().endswith("(see python -m training --help)")


@pytest.mark.parametrize(
    ("text", "value"), [("auto", "auto"), ("500", 500), ("0", 0), ("0.1", 0.1), ("10%", 0.1), ("0.25", 0.25)]
)
def test_val_size_takes_a_count_a_fraction_or_a_percentage(text: str, value: object) -> None:
    assert parse_args(["--val-size", text]).val_size == value


def test_recipe_defaults_are_left_to_the_data_and_explicit_values_win() -> None:
    args = parse_args([])
    assert (args.batch_size, args.lr, args.val_size, args.output) == (None, None, "auto", None)
    args = parse_args(["--batch-size", "64", "--lr", "0.05"])
    assert (args.batch_size, args.lr) == (64, 0.05)
