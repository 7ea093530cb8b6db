"""One loaded version of a model: its inference engine, what it loaded, and who is using it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.inference.protocol import Engine

if TYPE_CHECKING:
    from app.predictor import Predictor
from app.card import ModelCard


@dataclass(eq=False)
class ServedVersion:
    """A version that took traffic. Requests lease it for their whole life, so an unload can
    wait for the last one (``drain``) before its engine stops: none fails for the change."""

    name: str
    # As the API names it: the repository's version number, or with a single checkpoint
    # (FASHION_MODEL_PATH) the first 12 hex digits of its SHA-256.
    version: str
    rank: int  # newest is highest
    engine: Engine
    path: Path
    # The model itself, only where the worker is a thread of this process (tests, debugging).
    predictor: Predictor | None = None
    in_use: int = 0
    _idle: asyncio.Event | None = field(default=None, repr=False)

    @property
    def card(self) -> ModelCard:
        """What its worker loaded, as served (its latest worker's, after a restart)."""
        card = self.engine.card
        assert card is not None  # a version is served once its worker is ready
        return card

    @property
    def ready(self) -> bool:
        """Its inference worker takes requests (false while one restarts)."""
        return self.engine.ready

    def acquire(self) -> None:
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        if self.in_use == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Wait until no request uses it (at most ``timeout_s``), then stop its engine."""
        if self.in_use:
            self._idle = asyncio.Event()
            # Past the request timeout every request has had its answer (a 504 at worst).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        await self.engine.aclose()
