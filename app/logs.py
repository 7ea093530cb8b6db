"""Logging for the app's own loggers, in the server and in its worker and decoder processes:
text for a terminal, or one JSON object per line (python-json-logger) for a log pipeline;
either way each line written while a request is served carries its id."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from app.request_context import RequestIdFilter

LogFormat = Literal["text", "json"]
_OURS = ("app", "models")


class TextFormatter(logging.Formatter):
    """``LEVEL     logger: message``, with ``[request id]`` before the message during a request."""

    def __init__(self) -> None:
        super().__init__("%(levelname)-9s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        line = super().formatMessage(record)
        if request_id is None:
            return line
        head, _, message = line.partition(": ")
        return f"{head}: [{request_id}] {message}"


def json_formatter() -> logging.Formatter:
    """One JSON object a line: level, logger, message, what the line adds (``extra``), time (UTC)."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        # uvicorn adds its message again with terminal colour codes: noise in a log pipeline.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        timestamp="time",
    )


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return json_formatter() if log_format == "json" else TextFormatter()


class _AppHandler(logging.StreamHandler[Any]):
    """The handler this module gives the app's loggers (told apart from anyone else's)."""


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Give the app's loggers a level, and a handler in ``log_format`` when nobody configured one.

    uvicorn configures only its own loggers; without this our INFO lines would vanish (in a
    worker or decoder process, which uvicorn never configured, all of them would). In JSON,
    uvicorn's own lines are JSON too, so the stream stays one object per line; its access
    line is silenced, since ours (``app.access``) replaces it.
    """
    formatter = make_formatter(log_format)
    request_ids = RequestIdFilter()
    for name in _OURS:
        named = logging.getLogger(name)
        named.setLevel(level.upper())
        ours: list[logging.Handler] = [h for h in named.handlers if isinstance(h, _AppHandler)]
        if not ours and (named.handlers or logging.getLogger().handlers):
            continue  # configured by someone else (a test's capture, an embedding program)
        handler = ours[0] if ours else _AppHandler()
        handler.setFormatter(formatter)
        handler.filters = [request_ids]
        if not ours:
            named.addHandler(handler)
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error"):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(formatter)
                handler.filters = [request_ids]
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any] | None:
    """uvicorn's logging in ``log_format`` from its first line (None: uvicorn's own, for text)."""
    if log_format == "text":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": json_formatter}},
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
