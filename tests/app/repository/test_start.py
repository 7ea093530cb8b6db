"""Starting a version: where the model is exported, at what priority, and how its worker waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import app.predictor
from app.inference.hosts import ThreadHost
from app.repository import start
from app.settings import Settings


def test_the_export_yields_the_cpu_to_requests_in_flight(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It runs in a process of its own (in_fresh_process); here, what that process does first.
    calls: list[str] = []
    monkeypatch.setattr(start.os, "nice", lambda increment: calls.append(f"nice {increment}"))
    monkeypatch.setattr(app.predictor, "export_for_worker", lambda config: calls.append("export"))
    config = start.worker_config(Settings(model_path=tiny_checkpoint, device="cpu"), tiny_checkpoint)
    start._export(config)
    assert calls == [f"nice {start.EXPORT_NICENESS}", "export"]
    assert start.EXPORT_NICENESS > 0


def test_the_worker_polls_as_long_as_the_settings_say(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", worker_spin_ms=5.0)
    assert start.worker_config(settings, tiny_checkpoint).spin_s == pytest.approx(0.005)
    assert Settings(model_path=tiny_checkpoint, device="cpu").worker_spin_ms == 2.0
    with pytest.raises(ValueError):
        Settings(model_path=tiny_checkpoint, device="cpu", worker_spin_ms=-1.0)


def test_a_worker_in_a_thread_never_polls(tiny_checkpoint: Path) -> None:
    settings = Settings(model_path=tiny_checkpoint, device="cpu", inference_process=False, worker_spin_ms=5.0)
    host, predictor = asyncio.run(start.worker_host(settings, tiny_checkpoint))
    assert isinstance(host, ThreadHost) and predictor is not None
    assert host.worker_factory().spin_s == 0.0
