"""The models and versions being served, and the live changes to them: load and unload.

Each change builds a new table and swaps it in with one assignment on the event loop: a
request sees the table before or after, never half of it. A new version takes traffic only
once it is loaded, checked and warmed up, in this process and in its worker; a version
that goes is taken out of the table first, then drained (``ServedVersion.drain``). Changes
run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.repository.served import ServedVersion
from app.repository.start import Shared, start_version
from models.errors import first_line
from models.repository import RepositoryError, check_name, model_names, model_versions

logger = logging.getLogger("app")

SINGLE = (
    "this server serves one checkpoint (FASHION_MODEL_PATH); set FASHION_MODEL_REPOSITORY to load "
    "and unload models"
)
# Past the request timeout every request has been answered; the rest is margin.
DRAIN_MARGIN_S = 5.0


class UnknownModelError(LookupError):
    """No such model, or no such version of it (a 404)."""


class LoadError(ValueError):
    """A load or unload that cannot be done as asked (a 400): the message is the one-line reason."""


class ConflictError(RuntimeError):
    """A change that would leave /predict without a model (a 409)."""


Table = dict[str, dict[str, ServedVersion]]


class ModelRepository:
    """The served models: ``root`` a repository folder, or None for one checkpoint, ``single``."""

    def __init__(self, shared: Shared, root: Path | None, default: str, single: Path | None = None) -> None:
        self.shared = shared
        self.root = root
        self.default = default
        self.single = single
        self.models: Table = {}
        self._lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ serving

    @property
    def default_ready(self) -> bool:
        """The default model has a version whose worker takes requests."""
        return any(served.ready for served in self.models.get(self.default, {}).values())

    def newest(self, name: str | None = None) -> ServedVersion | None:
        """The newest ready version of ``name`` (the default model), else its newest; None if none."""
        versions = list(self.models.get(name or self.default, {}).values())
        ready = [served for served in versions if served.ready] or versions
        return max(ready, key=lambda served: served.rank, default=None)

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedVersion:
        """The version a request goes to; UnknownModelError (with what there is) otherwise."""
        name = name or self.default
        versions = self.models.get(name)
        if not versions:
            served_names = ", ".join(repr(n) for n in sorted(self.models)) or "none"
            raise UnknownModelError(f"unknown model {name[:100]!r}; this server serves {served_names}")
        if version is None:
            newest = self.newest(name)
            assert newest is not None
            return newest
        served = versions.get(version)
        if served is None:
            have = ", ".join(repr(v) for v in self.versions(name))
            raise UnknownModelError(f"unknown version {version[:100]!r} of {name!r}; it has {have}")
        return served

    def versions(self, name: str) -> list[str]:
        """A model's loaded versions, oldest first."""
        return [s.version for s in sorted(self.models.get(name, {}).values(), key=lambda s: s.rank)]

    @contextlib.contextmanager
    def use(self, name: str | None = None, version: str | None = None) -> Iterator[ServedVersion]:
        """The version a request goes to, leased until the request is done with it."""
        served = self.resolve(name, version)  # and leased in the same step: no change comes between
        served.acquire()
        try:
            yield served
        finally:
            served.release()

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: each loaded version, and each model folder not loaded."""
        names = set(self.models)
        if self.root is not None:
            with contextlib.suppress(RepositoryError):
                names |= set(model_names(self.root))
        entries: list[dict[str, Any]] = []
        for name in sorted(names):
            versions = sorted(self.models.get(name, {}).values(), key=lambda s: s.rank)
            if not versions and not ready_only:
                entries.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
            for served in versions:
                if served.ready or not ready_only:
                    state, reason = ("READY", "") if served.ready else ("UNAVAILABLE", "restarting")
                    entries.append(
                        {"name": name, "version": served.version, "state": state, "reason": reason}
                    )
        return entries

    # ------------------------------------------------------------------ changes

    async def start(self) -> None:
        """Load every version at start-up; CheckpointError or DeviceError for the first that cannot serve."""
        if self.root is None:
            assert self.single is not None
            served = await start_version(self.shared, self.default, None, 1, self.single)
            self._install(self.default, [served], [])
            return
        for name in model_names(self.root):
            for version, path in model_versions(self.root, name).items():
                served = await start_version(self.shared, name, str(version), version, path)
                self._install(name, [served], [])

    async def load(self, name: str) -> None:
        """Read the model's folder again: start its new versions, then retire the ones gone."""
        root = self._root()
        self._check(name)
        async with self._lock:
            if self._closed:
                raise LoadError("the server is shutting down")
            try:
                found = await asyncio.to_thread(model_versions, root, name)
            except RepositoryError as exc:
                raise LoadError(str(exc).replace(str(root), "<repository>")) from None
            current = self.models.get(name, {})
            if not found and not current:
                raise UnknownModelError(
                    f"no model {name!r} in the repository (no {name}/<version>/model.pth)"
                )
            if not found and name == self.default:
                raise ConflictError(
                    f"{name!r} has no versions left in the repository, and it is the default model: "
                    "it keeps serving what it has"
                )
            started = await self._start_all(name, found, current)
            gone = [served for served in current.values() if served.rank not in found]
            self._install(name, started, gone)
            if started or gone:
                logger.info(
                    "model %s: loaded versions %s, unloaded %s",
                    name,
                    [s.version for s in started] or "none",
                    [s.version for s in gone] or "none",
                )
            await self._retire(gone)

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name``; its folder stays, for a later load."""
        root = self._root()
        self._check(name)
        async with self._lock:
            if self._closed:
                raise LoadError("the server is shutting down")
            current = self.models.get(name)
            if current is None:
                try:
                    folders = await asyncio.to_thread(model_names, root)
                except RepositoryError as exc:
                    raise LoadError(str(exc).replace(str(root), "<repository>")) from None
                if name in folders:
                    return  # not loaded: nothing to do, as Triton answers
                raise UnknownModelError(f"unknown model {name!r}")
            if name == self.default:
                raise ConflictError(
                    f"{name!r} is the default model (FASHION_DEFAULT_MODEL), which /predict serves: it "
                    "cannot be unloaded; load a new version of it instead"
                )
            self._install(name, [], list(current.values()))
            logger.info("model %s: unloaded versions %s", name, [s.version for s in current.values()])
            await self._retire(list(current.values()))

    async def aclose(self) -> None:
        """Stop every version (each answers what it holds); no change starts after this."""
        async with self._lock:
            self._closed = True
            served = [s for versions in self.models.values() for s in versions.values()]
            self.models = {}
            await asyncio.gather(*(s.engine.aclose() for s in served))

    # ------------------------------------------------------------------ steps

    def _root(self) -> Path:
        if self.root is None:
            raise LoadError(SINGLE)
        return self.root

    def _check(self, name: str) -> None:
        try:
            check_name(name)
        except RepositoryError as exc:
            raise LoadError(str(exc)) from None

    async def _start_all(
        self, name: str, found: dict[int, Path], current: dict[str, ServedVersion]
    ) -> list[ServedVersion]:
        """Start the versions of ``found`` not in ``current``; all or none (LoadError)."""
        started: list[ServedVersion] = []
        for version, path in found.items():
            if str(version) in current:
                continue
            try:
                started.append(await start_version(self.shared, name, str(version), version, path))
            except Exception as exc:  # a corrupt or incompatible checkpoint, a worker that cannot start
                await asyncio.gather(*(s.engine.aclose() for s in started))
                # The server's own folders are nobody's business: the reason names the version only.
                text = str(exc).replace(str(path), f"{name}/{version}/model.pth")
                if self.root is not None:
                    text = text.replace(str(self.root), "<repository>")
                reason = first_line(RuntimeError(text)) if text.strip() else type(exc).__name__
                raise LoadError(f"cannot load {name} version {version}: {reason}") from exc
        return started

    def _install(self, name: str, started: list[ServedVersion], gone: list[ServedVersion]) -> None:
        """Swap in the new table: one assignment."""
        versions = {v: s for v, s in self.models.get(name, {}).items() if s not in gone}
        versions |= {s.version: s for s in started}
        table = {n: v for n, v in self.models.items() if n != name}
        if versions:
            table[name] = versions
        self.models = table
        metrics = self.shared.metrics
        for served in started:
            metrics.set_model(served.name, served.version, served.card)
        for served in gone:
            metrics.remove_model(served.name, served.version)
        # The queue depth is every version's.
        metrics.queue_depth.set_function(self._depth)

    def _depth(self) -> int:
        return sum(served.engine.depth for versions in self.models.values() for served in versions.values())

    async def _retire(self, gone: list[ServedVersion]) -> None:
        timeout = self.shared.settings.request_timeout_s + DRAIN_MARGIN_S
        await asyncio.gather(*(served.drain(timeout) for served in gone))
