"""The error a model file raises when it cannot be used, and its one-line form; no torch,
so a process that only reports a model's failure need not import it."""

from __future__ import annotations


class CheckpointError(Exception):
    """A model file that cannot be used; the message names the path and the reason."""


def first_line(exc: BaseException) -> str:
    """An exception's message in one short line, for an error that must fit on one."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
