"""The request being served: its id (the client's X-Request-ID when it is safe to repeat, else
a new one), for every log line written meanwhile, and its predictions, for its access line."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the logging set-up, which must not pull in torch
    from app.prediction import Prediction

HEADER = b"x-request-id"
MAX_LENGTH = 128
# What load balancers and tracing systems send (uuids, hex, "abc-123", "trace:span"): nothing
# that could break a log line or a header, or smuggle markup into a dashboard.
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    predictions: Sequence[Prediction] = ()
    model: tuple[str, str] | None = None  # the name and version that made them


_current: ContextVar[RequestContext | None] = ContextVar("request", default=None)


def resolve_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's X-Request-ID if it is one valid value, else a new uuid4 (32 hex digits)."""
    given = [value for name, value in headers if name == HEADER]
    if len(given) == 1 and _VALID.fullmatch(given[0]):
        return given[0].decode("ascii")
    return uuid.uuid4().hex


def begin(request_id: str) -> tuple[RequestContext, Token[RequestContext | None]]:
    """Make a request current (for this task and what it starts); ``end`` takes the token."""
    context = RequestContext(request_id)
    return context, _current.set(context)


def end(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_id() -> str | None:
    """The id of the request this code is serving; None outside a request."""
    context = _current.get()
    return None if context is None else context.request_id


def note_predictions(predictions: Sequence[Prediction], model: tuple[str, str] | None = None) -> None:
    """Keep the request's predictions, and the model name and version that made them, for its
    access line (the class and confidence of each)."""
    context = _current.get()
    if context is not None:
        context.predictions = predictions
        context.model = model


class RequestIdFilter(logging.Filter):
    """Put the current request's id on each record (``record.request_id``) unless it has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            context = _current.get()
            if context is not None:
                record.request_id = context.request_id
        return True
