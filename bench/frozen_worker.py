"""The frozen-worker drill: the inference process stops answering (SIGSTOP) under load.

A process that hangs without dying (a deadlock, a stuck device, a machine swapping) is
the failure a crash-only supervisor misses. Four clients loop POST /predict; after 3 s the
inference process, found from the server's log line ``inference process <pid> ready``, is
sent SIGSTOP, and /health is polled every 100 ms. The server must say it is unhealthy
(503) within 5 s, serve from a new inference process within 10 s, never keep a request
past FASHION_REQUEST_TIMEOUT_S + 1 s, never answer 500, and never drop a connection.

Run with ``python -m bench.attacks --drill frozen``.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.server_process import fashion_serve
from bench.uploads import multipart, post, sample_pngs

READY = re.compile(r"inference process (\d+) ready")
REQUEST_TIMEOUT_S = 5.0  # FASHION_REQUEST_TIMEOUT_S for the drill
UNHEALTHY_WITHIN_S, SERVING_WITHIN_S, SLACK_S = 5.0, 10.0, 1.0
CLIENTS, LOAD_S, POLL_S = 4, 3.0, 0.1
WATCH_S = 30.0  # after SIGSTOP: long enough to see a slow recovery, not only a pass or a fail
SERVING_FOR_S = 2.0  # once the new process answers, watch this much longer, then end


@dataclass
class FrozenWorkerResult:
    request_timeout_s: float
    old_pid: int
    new_pid: int | None  # the next "ready" pid in the log
    unhealthy_after_s: float | None  # from SIGSTOP to the first 503 from /health
    serving_after_s: float | None  # from SIGSTOP to the first 200 after the new process was ready
    requests: int
    statuses: dict[int, int]
    dropped: int  # no answer: connection reset, closed, or no answer within 30 s
    max_latency_s: float
    health: dict[int, int]  # /health's answers from SIGSTOP on (0: none within 2 s)

    @property
    def ok(self) -> bool:
        return (
            self.unhealthy_after_s is not None
            and self.unhealthy_after_s <= UNHEALTHY_WITHIN_S
            and self.serving_after_s is not None
            and self.serving_after_s <= SERVING_WITHIN_S
            and self.max_latency_s <= self.request_timeout_s + SLACK_S
            and not self.statuses.get(500)
            and not self.dropped
        )

    def summary(self) -> str:
        def seconds(value: float | None) -> str:
            return "never" if value is None else f"{value:.1f} s"

        return (
            f"frozen-worker: SIGSTOP to process {self.old_pid}; /health 503 after "
            f"{seconds(self.unhealthy_after_s)}, served by process {self.new_pid} after "
            f"{seconds(self.serving_after_s)}; {self.requests} requests {self.statuses}, dropped "
            f"{self.dropped}, slowest {self.max_latency_s:.1f} s (timeout {self.request_timeout_s:g} s); "
            f"/health from SIGSTOP on {self.health}"
        )


def ready_pids(log: Path) -> list[int]:
    return [int(pid) for pid in READY.findall(log.read_text(errors="replace"))]


def health_status(port: int) -> int:
    """/health's status; 0 when it gave none within 2 s."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def frozen_worker_drill(
    model: Path, workdir: Path, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> FrozenWorkerResult:
    """Run the drill against a fresh ``fashion-serve`` serving ``model``."""
    bodies = [multipart(png) for png in sample_pngs(16)[0]]
    log = workdir / "frozen-server.log"
    answers: list[tuple[float, float, int | None]] = []  # (sent, answered, status); appends are atomic
    health: list[tuple[float, int]] = []
    stop = threading.Event()
    with fashion_serve(model, log, log_level="info", request_timeout_s=request_timeout_s) as server:
        deadline = time.monotonic() + 30
        while not ready_pids(log) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if len(ready_pids(log)) != 1:
            raise RuntimeError(
                f"expected one 'inference process <pid> ready' line in {log}: {ready_pids(log)}"
            )
        old_pid = ready_pids(log)[0]

        def client(first: int) -> None:
            for index in itertools.count(first, CLIENTS):
                if stop.is_set():
                    return
                sent = time.monotonic()
                status, seconds = post(server.port, "/predict", bodies[index % len(bodies)], timeout=30)
                answers.append((sent, sent + seconds, status))

        def poll_health() -> None:
            while not stop.wait(POLL_S):
                health.append((time.monotonic(), health_status(server.port)))

        threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]
        threads.append(threading.Thread(target=poll_health, name="health"))
        for thread in threads:
            thread.start()
        new_pid, new_ready_at = None, None
        try:
            time.sleep(LOAD_S)
            print(f"  frozen-worker: SIGSTOP to the inference process {old_pid}", flush=True)
            stopped_at = time.monotonic()
            os.kill(old_pid, signal.SIGSTOP)
            while time.monotonic() < stopped_at + WATCH_S:
                time.sleep(POLL_S)
                if new_pid is None:
                    new_pid = next((pid for pid in ready_pids(log) if pid != old_pid), None)
                    new_ready_at = time.monotonic() if new_pid else None
                elif new_ready_at and time.monotonic() > new_ready_at + SERVING_FOR_S:
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            if old_pid in server.pids():  # not replaced: let it go, then end it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old_pid, signal.SIGCONT)
                    os.kill(old_pid, signal.SIGKILL)
    after_stop = [(at, status) for at, status in health if at >= stopped_at]
    first_503 = next((at for at, status in after_stop if status == 503), None)
    served = [
        answered
        for _, answered, status in answers
        if status == 200 and new_ready_at and answered >= new_ready_at
    ]
    result = FrozenWorkerResult(
        request_timeout_s=request_timeout_s,
        old_pid=old_pid,
        new_pid=new_pid,
        unhealthy_after_s=None if first_503 is None else first_503 - stopped_at,
        serving_after_s=min(served) - stopped_at if served else None,
        requests=len(answers),
        statuses=dict(sorted(Counter(status for _, _, status in answers if status is not None).items())),
        dropped=sum(status is None for _, _, status in answers),
        max_latency_s=max(answered - sent for sent, answered, _ in answers),
        health=dict(sorted(Counter(status for _, status in after_stop).items())),
    )
    print("  " + result.summary(), flush=True)
    return result
