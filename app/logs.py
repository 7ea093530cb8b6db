"""Logging for the app's own loggers, in the server and in its worker and decoder processes."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Give the app's loggers a level, and a handler when nobody configured one.

    uvicorn configures only its own loggers; without this our INFO lines would vanish (in a
    worker or decoder process, which uvicorn never configured, all of them would).
    """
    for name in ("app", "models"):
        named = logging.getLogger(name)
        named.setLevel(level.upper())
        if not named.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
            named.addHandler(handler)
