"""Slowloris: 200 connections each sending its request head a byte a second, while wrk
measures the ordinary requests.

Every slow connection must be closed by the server's head deadline
(``app.http_protocol.HEAD_TIMEOUT_S``), and wrk, posting 28x28 PNGs to /predict at
concurrency 8 meanwhile, must see no error and a p99 under 250 ms. The drill is bounded to
60 s: a connection still open then counts as never closed.

Run with ``python -m bench.attacks --drill slowloris``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult, run_wrk, write_bodies
from bench.server_process import fashion_serve
from bench.uploads import sample_pngs

CONNECTIONS, BYTE_EVERY_S, BOUND_S = 200, 1.0, 60.0
WRK_CONNECTIONS, WRK_P99_MS, WRK_SECONDS = 8, 250.0, 15.0


@dataclass
class SlowlorisResult:
    connections: int
    quiet: LoadResult  # wrk before the slow connections open
    load: LoadResult  # wrk while they trickle
    closed_after_s: list[float] = field(default_factory=list)  # per slow connection closed in the bound
    answers: dict[str, int] = field(default_factory=dict)  # first line the server sent each, counted

    @property
    def all_closed_s(self) -> float | None:
        """Seconds until the last slow connection was closed; None if one outlived the bound."""
        return max(self.closed_after_s) if len(self.closed_after_s) == self.connections else None

    @property
    def ok(self) -> bool:
        load_ok = self.load.errors == 0 and self.load.p99_ms < WRK_P99_MS
        return load_ok and self.all_closed_s is not None

    def summary(self) -> str:
        closed = (
            "never (some outlived the bound)" if self.all_closed_s is None else f"{self.all_closed_s:.1f} s"
        )
        quiet, load = self.quiet, self.load
        return (
            f"slowloris: {self.connections} connections, a head byte every {BYTE_EVERY_S:g} s; "
            f"all closed after {closed}; answers {self.answers}; wrk c{WRK_CONNECTIONS} before: "
            f"{quiet.rps:.0f} req/s, p99 {quiet.p99_ms:.1f} ms; meanwhile: {load.rps:.0f} req/s, "
            f"p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, errors {load.errors}"
        )


def _trickle(port: int, closed_after: list[float], answers: dict[str, int], stop: threading.Event) -> None:
    """Open the slow connections, then send each a header byte a second until the server closes it."""
    started = time.monotonic()
    open_socks: dict[socket.socket, float] = {}
    for _ in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        sock.setblocking(False)
        open_socks[sock] = started
    while open_socks and not stop.is_set() and time.monotonic() - started < BOUND_S:
        for sock in list(open_socks):
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                data = None  # still open, nothing from the server
            except OSError:
                data = b""
            if data is not None:  # an answer, or the close itself
                line = data.split(b"\r\n", 1)[0].decode("latin-1") or "(closed, no answer)"
                answers[line] = answers.get(line, 0) + 1
                closed_after.append(time.monotonic() - started)
                del open_socks[sock]
                sock.close()
                continue
            with contextlib.suppress(OSError):  # closed meanwhile: seen by the next recv
                sock.send(b"a")
        time.sleep(BYTE_EVERY_S)
    for sock in open_socks:
        sock.close()


def slowloris_drill(model: Path, workdir: Path) -> SlowlorisResult:
    content_type = write_bodies(sample_pngs(16)[0], workdir / "slowloris-bodies")
    closed_after: list[float] = []
    answers: dict[str, int] = {}
    with fashion_serve(model, workdir / "slowloris-server.log") as server:
        url = f"http://127.0.0.1:{server.port}/predict"
        run_wrk(url, WRK_CONNECTIONS, 2, workdir / "slowloris-bodies", content_type)  # warm-up
        quiet = run_wrk(url, WRK_CONNECTIONS, 5, workdir / "slowloris-bodies", content_type)
        stop = threading.Event()
        trickler = threading.Thread(target=_trickle, args=(server.port, closed_after, answers, stop))
        trickler.start()
        try:
            print(
                f"  slowloris: {CONNECTIONS} slow connections, wrk c{WRK_CONNECTIONS} for {WRK_SECONDS:g} s"
            )
            load = run_wrk(url, WRK_CONNECTIONS, WRK_SECONDS, workdir / "slowloris-bodies", content_type)
            trickler.join(BOUND_S)
        finally:
            stop.set()
            trickler.join()
    result = SlowlorisResult(CONNECTIONS, quiet, load, closed_after, answers)
    print("  " + result.summary(), flush=True)
    return result
