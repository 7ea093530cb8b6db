"""Memory bombs: small files that decode to a lot of memory, posted by many clients at once.

Two cases, each against a fresh ``fashion-serve``: a 657 KB ICO whose one entry is a
13000x13000 RGBA PNG (676 MB decoded), and a 4000x4000 RGBA PNG cut within its pixel data
(bench/attack_images.py). 16 clients post the file to /predict at once, twice. Every answer
must be a 4xx (the PNG: 400), and the resident memory of the server and all its processes,
sampled every 50 ms throughout, must come back within 100 MiB of where it started.

Run with ``python -m bench.attacks --drill memory``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import attack_images
from bench.server_process import fashion_serve
from bench.soak import resident_kib
from bench.uploads import form, multipart, post, sample_pngs

CLIENTS, BURSTS = 16, 2
MAX_GROWTH_MIB = 100  # memory after the bursts may exceed memory before by this much
# The most decoding may hold at once with the default settings: FASHION_DECODE_MEMORY_MB
# (256) for each of the FASHION_DECODE_PROCESSES (2) decoders. The peak must stay below it.
DECODING_BUDGET_MIB = 256 * 2
SAMPLE_S = 0.05
SETTLE_S = 3.0  # from the last answer to the memory reading "after"
# A server that grows this far (or by half the memory available) is killed before it takes
# the machine, and whatever else runs on it, with it.
GUARD_MIB = 8192


@dataclass
class MemoryResult:
    case: str
    upload: str  # what each client posted
    expected: int | None  # the status every answer must have; None: any 4xx
    statuses: dict[int, int]
    dropped: int  # no answer: connection reset, closed or timed out
    max_latency_s: float
    rss_before_mib: float
    rss_peak_mib: float
    rss_after_mib: float  # SETTLE_S after the last answer
    killed_by_guard: bool = False

    @property
    def growth_mib(self) -> float:
        return self.rss_after_mib - self.rss_before_mib

    @property
    def peak_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib

    @property
    def ok(self) -> bool:
        def right(status: int) -> bool:
            return status == self.expected if self.expected else 400 <= status < 500

        answers_ok = all(right(status) for status in self.statuses) and not self.dropped
        held = self.growth_mib <= MAX_GROWTH_MIB and self.peak_growth_mib <= DECODING_BUDGET_MIB
        return answers_ok and held and not self.killed_by_guard

    def summary(self) -> str:
        after = "KILLED by the memory guard" if self.killed_by_guard else f"after {self.growth_mib:+.0f}"
        return (
            f"{self.case}: {CLIENTS} clients x {BURSTS} bursts, answers {self.statuses}, dropped "
            f"{self.dropped}, slowest {self.max_latency_s:.1f} s; RSS {self.rss_before_mib:.0f} MiB before, "
            f"peak {self.peak_growth_mib:+.0f}, {after}"
        )


def available_mib() -> float:
    """MemAvailable from /proc/meminfo."""
    line = next(
        line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:")
    )
    return int(line.split()[1]) / 1024


def burst(port: int, body: bytes, clients: int) -> list[tuple[int | None, float]]:
    """``clients`` threads post ``body`` to /predict at once; each one's (status, seconds)."""
    start = threading.Barrier(clients)
    answers: list[tuple[int | None, float]] = [(None, 0.0)] * clients

    def client(index: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=30)
        answers[index] = post(port, "/predict", body)

    threads = [threading.Thread(target=client, args=(i,), name=f"burst-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def memory_case(
    model: Path, workdir: Path, case: str, upload: tuple[str, bytes, str], expected: int | None
) -> MemoryResult:
    """Bursts of one upload against a fresh server, its memory sampled throughout."""
    filename, data, _ = upload
    body = form("file", [upload])
    with fashion_serve(model, workdir / f"{case}-server.log") as server:
        pid = server.process.pid
        warm_up = [post(server.port, "/predict", multipart(png))[0] for png in sample_pngs(20)[0]]
        if set(warm_up) != {200}:
            raise RuntimeError(f"{case}: the server did not answer its warm-up with 200s: {warm_up}")
        before = resident_kib(pid) / 1024
        peak, guard_tripped, done = before, threading.Event(), threading.Event()
        guard_mib = min(GUARD_MIB, available_mib() / 2)

        def sample() -> None:
            nonlocal peak
            while not done.wait(SAMPLE_S):
                with contextlib.suppress(RuntimeError):  # the server is gone: the answers say so
                    peak = max(peak, resident_kib(pid) / 1024)
                if peak - before > guard_mib and not guard_tripped.is_set():
                    guard_tripped.set()
                    # At once: a graceful stop would let the decodes in flight grow on.
                    os.killpg(server.process.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, name="rss-sampler")
        sampler.start()
        answers: list[tuple[int | None, float]] = []
        try:
            for index in range(BURSTS):
                print(
                    f"  {case}: burst {index + 1} of {BURSTS} ({CLIENTS} x {len(data):,} bytes)", flush=True
                )
                answers += burst(server.port, body, CLIENTS)
            time.sleep(SETTLE_S)
        finally:
            done.set()
            sampler.join()
        after = resident_kib(pid) / 1024 if not guard_tripped.is_set() else peak
    return MemoryResult(
        case=case,
        upload=f"{filename}, {len(data):,} bytes",
        expected=expected,
        statuses=dict(sorted(Counter(status for status, _ in answers if status is not None).items())),
        dropped=sum(status is None for status, _ in answers),
        max_latency_s=max(seconds for _, seconds in answers),
        rss_before_mib=before,
        rss_peak_mib=peak,
        rss_after_mib=after,
        killed_by_guard=guard_tripped.is_set(),
    )


def memory_drill(model: Path, workdir: Path) -> list[MemoryResult]:
    """The ICO bomb (any 4xx), then the truncated PNG (400), each against a fresh server."""
    print("  building a 13000x13000 PNG inside an ICO ...", flush=True)
    cases = [
        ("ico-bomb", ("bomb.ico", attack_images.ico_bomb(), "image/x-icon"), None),
        ("truncated-png", ("cut.png", attack_images.truncated_png(), "image/png"), 400),
    ]
    results = []
    for case, upload, expected in cases:
        results.append(memory_case(model, workdir, case, upload, expected))
        print("  " + results[-1].summary(), flush=True)
    return results
