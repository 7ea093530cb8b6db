"""Live model changes under load: versions added, removed, refused and restored while wrk
posts to /predict, then load/unload cycles measured for memory.

The server serves a repository of copies of the shipped model (``fashion``, the default,
and ``canary``). wrk posts 28x28 PNGs to /predict at concurrency 32 for 30 s, once with no
change (the baseline) and once while, a few seconds apart:

1. version 2 of ``fashion`` is published (written beside, then renamed in) and loaded;
2. version 1's folder is moved out, and the model loaded: version 1 is drained and goes;
3. a corrupt version 3 is written and loaded: refused (400), nothing changes; it is removed;
4. version 1's folder is moved back and loaded.

Pass: wrk sees no non-2xx answer and no socket error, after each load call returns /predict
and the model's metadata show the new state within 1 s, and p99 during the drill is at
most twice the baseline's. Then ``canary`` is unloaded and loaded 20 times: the RSS of the
server and all its processes, in the same state, must grow by less than 50 MiB.

Run with ``python -m bench.repository_drill`` (alone), or as part of ``python -m bench.reliability``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult, run_wrk, write_bodies
from bench.server_process import ServerProcess, fashion_serve
from bench.uploads import multipart, sample_pngs

WRK_CONNECTIONS, WRK_SECONDS = 32, 30.0
STEP_EVERY_S = 6.0  # the first change 5 s in, the last 23 s in: each under load
SWITCH_WITHIN_S, P99_FACTOR = 1.0, 2.0
CYCLES, MAX_GROWTH_MIB = 20, 50.0
ADMIN_KEY = "drill-admin-key"
MODEL = "fashion"


@dataclass
class Step:
    what: str
    status: int  # the load call's
    expected_status: int
    call_s: float  # how long the load call took
    seen_after_s: float | None  # from its return to /predict and the metadata showing the new state
    error: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.status == self.expected_status
            and self.seen_after_s is not None
            and self.seen_after_s <= SWITCH_WITHIN_S
        )


@dataclass
class RepositoryDrillResult:
    quiet: LoadResult
    load: LoadResult
    steps: list[Step] = field(default_factory=list)
    cycle_statuses: list[int] = field(default_factory=list)
    rss_before_mib: float = 0.0  # after one unload/load cycle
    rss_after_mib: float = 0.0  # after CYCLES more

    @property
    def growth_mib(self) -> float:
        return self.rss_after_mib - self.rss_before_mib

    @property
    def p99_ok(self) -> bool:
        return self.load.p99_ms <= P99_FACTOR * self.quiet.p99_ms

    @property
    def ok(self) -> bool:
        cycles_ok = len(self.cycle_statuses) == 2 * CYCLES and set(self.cycle_statuses) == {200}
        changes_ok = len(self.steps) == 4 and all(step.ok for step in self.steps)
        memory_ok = cycles_ok and self.growth_mib < MAX_GROWTH_MIB
        return self.load.errors == 0 and self.p99_ok and changes_ok and memory_ok

    def summary(self) -> str:
        socket_errors = self.load.errors - self.load.non_2xx
        steps = "; ".join(
            f"{step.what}: {step.status}, {step.call_s:.2f} s, seen {_after(step.seen_after_s)}"
            for step in self.steps
        )
        return (
            f"repository drill: wrk c{WRK_CONNECTIONS} {self.load.requests} requests, {self.load.non_2xx} "
            f"non-2xx, {socket_errors} socket errors, p99 {self.load.p99_ms:.1f} ms (baseline "
            f"{self.quiet.p99_ms:.1f} ms); {steps}; {CYCLES} unload/load cycles: RSS "
            f"{self.rss_before_mib:.0f} -> {self.rss_after_mib:.0f} MiB ({self.growth_mib:+.1f})"
        )


def _after(seconds: float | None) -> str:
    return "never" if seconds is None else f"after {seconds * 1000:.0f} ms"


def _request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _admin(port: int, action: str, name: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    status, body = _request(port, "POST", f"/v2/repository/models/{name}/{action}", b"{}", headers)
    return status, body.decode(errors="replace")


def _state(port: int, upload: bytes, content_type: str) -> tuple[str, list[str]]:
    """The version /predict answers with, and the versions the model's metadata lists."""
    _, body = _request(port, "POST", "/predict", upload, {"Content-Type": content_type})
    predicted = json.loads(body).get("model_version", "")
    _, metadata = _request(port, "GET", f"/v2/models/{MODEL}")
    return predicted, json.loads(metadata).get("versions", [])


def _seen_after(port: int, upload: bytes, content_type: str, expected: tuple[str, list[str]]) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < 5 * SWITCH_WITHIN_S:
        if _state(port, upload, content_type) == expected:
            return time.monotonic() - began
        time.sleep(0.01)
    return None


def _changes(
    port: int, root: Path, shipped: Path, upload: bytes, content_type: str, steps: list[Step]
) -> None:
    """The four changes, STEP_EVERY_S apart, the first 5 s after wrk starts."""
    model, aside = root / MODEL, root.parent / "aside"
    aside.mkdir(exist_ok=True)

    def publish_v2() -> None:
        staging = model / ".staging-2"
        staging.mkdir()
        shutil.copyfile(shipped, staging / "model.pth")
        staging.rename(model / "2")

    def corrupt_v3() -> None:
        (model / ".staging-3").mkdir()
        (model / ".staging-3" / "model.pth").write_bytes(shipped.read_bytes()[: shipped.stat().st_size // 2])
        (model / ".staging-3").rename(model / "3")

    plan = [
        ("version 2 added and loaded", publish_v2, 200, ("2", ["1", "2"])),
        ("version 1 removed, model loaded", lambda: (model / "1").rename(aside / "1"), 200, ("2", ["2"])),
        ("corrupt version 3 loaded", corrupt_v3, 400, ("2", ["2"])),
        ("version 1 restored and loaded", lambda: (aside / "1").rename(model / "1"), 200, ("2", ["1", "2"])),
    ]
    time.sleep(5.0)
    for what, change, expected_status, expected in plan:
        change()
        began = time.monotonic()
        status, body = _admin(port, "load", MODEL)
        call_s = time.monotonic() - began
        seen = _seen_after(port, upload, content_type, expected)
        error = json.loads(body).get("error", "") if status != 200 else ""
        steps.append(Step(what, status, expected_status, call_s, seen, error))
        print(f"  {what}: {status} in {call_s:.2f} s, seen {_after(seen)} {error}", flush=True)
        if (model / "3").exists():
            shutil.rmtree(model / "3")
        time.sleep(STEP_EVERY_S)


def _memory_cycles(server: ServerProcess, result: RepositoryDrillResult) -> None:
    for name in ("unload", "load"):
        _admin(server.port, name, "canary")
    time.sleep(1.0)
    result.rss_before_mib = server.memory_mib()[1]
    for _ in range(CYCLES):
        for action in ("unload", "load"):
            result.cycle_statuses.append(_admin(server.port, action, "canary")[0])
    time.sleep(1.0)
    result.rss_after_mib = server.memory_mib()[1]


def repository_drill(model: Path, workdir: Path) -> RepositoryDrillResult:
    root = workdir / "repository" / "models"
    for name in (MODEL, "canary"):
        (root / name / "1").mkdir(parents=True)
        shutil.copyfile(model, root / name / "1" / "model.pth")
    pngs = sample_pngs(16)[0]
    bodies = workdir / "repository-bodies"
    content_type = write_bodies(pngs, bodies)
    upload = multipart(pngs[0], "probe.png", boundary=content_type.rsplit("=", 1)[1])
    settings = {"model_repository": root, "default_model": MODEL, "admin_key": ADMIN_KEY}
    with fashion_serve(None, workdir / "repository-server.log", **settings) as server:
        url = f"http://127.0.0.1:{server.port}/predict"
        run_wrk(url, WRK_CONNECTIONS, 3, bodies, content_type)  # warm-up
        print(f"  repository drill: baseline, wrk c{WRK_CONNECTIONS} for {WRK_SECONDS:g} s", flush=True)
        quiet = run_wrk(url, WRK_CONNECTIONS, WRK_SECONDS, bodies, content_type)
        steps: list[Step] = []
        changer = threading.Thread(
            target=_changes, args=(server.port, root, model, upload, content_type, steps)
        )
        print(f"  repository drill: changes under wrk c{WRK_CONNECTIONS} for {WRK_SECONDS:g} s", flush=True)
        changer.start()
        try:
            load = run_wrk(url, WRK_CONNECTIONS, WRK_SECONDS, bodies, content_type)
        finally:
            changer.join()
        result = RepositoryDrillResult(quiet, load, steps)
        _memory_cycles(server, result)
    print("  " + result.summary(), flush=True)
    return result


if __name__ == "__main__":
    import tempfile

    from bench.soak import SHIPPED_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        drilled = repository_drill(SHIPPED_MODEL, Path(tmp))
    raise SystemExit(0 if drilled.ok else 1)
