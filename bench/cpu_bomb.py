"""CPU bomb: batches of slow progressive JPEGs while wrk measures the ordinary requests.

A 2 KB progressive JPEG of 4000x4000 whose last scan is repeated 63 times
(bench/attack_images.py) costs over a second of CPU to decode. Three clients loop posting
/predict/batch with 40 of them while wrk posts 28x28 PNGs to /predict at concurrency 8, on
a fresh ``fashion-serve`` told its decode budget (FASHION_DECODE_CPU_S). wrk must see no
error and a p99 under 250 ms; every bomb request a 400 within the budget and 1 s.

Run with ``python -m bench.attacks --drill cpu [--quick]``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import attack_images
from bench.load import LoadResult, run_wrk, write_bodies
from bench.server_process import fashion_serve
from bench.uploads import form, post, sample_pngs
from models.images import REDUCED_SIDE

DECODE_CPU_S = 1.0  # FASHION_DECODE_CPU_S for the drill: the budget its bombs are held to
BOMB_FILES, BOMB_CLIENTS = 40, 3
DRAFT_SIDE = REDUCED_SIDE  # the server drafts a big JPEG down to it
CPU_SECONDS, QUICK_CPU_SECONDS = 30.0, 10.0
WRK_CONNECTIONS, WRK_P99_MS = 8, 250.0


@dataclass
class CpuBombResult:
    file_bytes: int
    decode_cpu_s: float  # one bomb, Image.open(...).load(), in a fresh process
    draft_cpu_s: float  # the same drafted to DRAFT_SIDE, as the server decodes a big JPEG
    budget_s: float  # FASHION_DECODE_CPU_S
    load: LoadResult  # wrk's small PNGs meanwhile
    bombs: list[tuple[int | None, float]] = field(default_factory=list)  # (status, seconds) each

    @property
    def refused_in_time(self) -> int:
        return sum(status == 400 and seconds <= self.budget_s + 1 for status, seconds in self.bombs)

    @property
    def ok(self) -> bool:
        load_ok = self.load.errors == 0 and self.load.p99_ms < WRK_P99_MS
        return load_ok and bool(self.bombs) and self.refused_in_time == len(self.bombs)

    def summary(self) -> str:
        statuses = Counter(status for status, _ in self.bombs)
        slowest = max((seconds for _, seconds in self.bombs), default=0.0)
        return (
            f"cpu-bomb: one {self.file_bytes:,}-byte JPEG costs {self.decode_cpu_s:.2f} s CPU to decode "
            f"({self.draft_cpu_s:.2f} s drafted); wrk c{WRK_CONNECTIONS} {self.load.rps:.0f} req/s, p50 "
            f"{self.load.p50_ms:.1f} ms, p99 {self.load.p99_ms:.1f} ms, errors {self.load.errors}; "
            f"{len(self.bombs)} bomb requests {dict(statuses)}, slowest {slowest:.1f} s, "
            f"{self.refused_in_time} a 400 within {self.budget_s + 1:g} s"
        )


def cpu_drill(model: Path, workdir: Path, seconds: float = CPU_SECONDS) -> CpuBombResult:
    """Batches of slow progressive JPEGs from three clients while wrk measures the small requests."""
    jpeg = attack_images.progressive_jpeg_bomb()
    full, drafted = attack_images.decode_cpu_s(jpeg), attack_images.decode_cpu_s(jpeg, DRAFT_SIDE)
    body = form("files", [(f"bomb{i}.jpg", jpeg, "image/jpeg") for i in range(BOMB_FILES)])
    content_type = write_bodies(sample_pngs(16)[0], workdir / "cpu-bodies")
    bombs: list[tuple[int | None, float]] = []
    with fashion_serve(model, workdir / "cpu-server.log", decode_cpu_s=DECODE_CPU_S) as server:
        url = f"http://127.0.0.1:{server.port}/predict"
        run_wrk(url, WRK_CONNECTIONS, 2, workdir / "cpu-bodies", content_type)  # warm-up
        stop = threading.Event()

        def bomber() -> None:
            while not stop.is_set():
                bombs.append(post(server.port, "/predict/batch", body))  # list.append is atomic

        threads = [threading.Thread(target=bomber, name=f"bomber-{i}") for i in range(BOMB_CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            print(f"  cpu-bomb: wrk c{WRK_CONNECTIONS} for {seconds:g} s, {BOMB_CLIENTS} bombers", flush=True)
            load = run_wrk(url, WRK_CONNECTIONS, seconds, workdir / "cpu-bodies", content_type)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    result = CpuBombResult(len(jpeg), full, drafted, DECODE_CPU_S, load, bombs)
    print("  " + result.summary(), flush=True)
    return result
