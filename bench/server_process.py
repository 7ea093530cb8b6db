"""A server under test as a subprocess: start it, time it to a ready /health, measure its
CPU time and memory (all its processes: uvicorn workers, LitServe's inference worker),
and stop it with everything it started.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_processes() -> dict[int, list[int]]:
    """Each running process id to the ids of its children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command name may hold spaces and parentheses: the fields follow the last ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


class ServerProcess:
    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.port, self.log = name, port, log
        self.started_at = time.perf_counter()
        # Output to a file, never a pipe nobody reads (a full pipe would stall the server);
        # a session of its own, so stopping it reaches every process it forks.
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, *command],
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from the spawn to the first 200 from /health."""
        deadline = self.started_at + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return time.perf_counter() - self.started_at
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: /health not ready after {timeout} s")

    def pids(self) -> list[int]:
        tree, found, todo = child_processes(), [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(tree.get(pid, []))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time of all its live processes so far."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICKS

    def memory_mib(self) -> tuple[float, float]:
        """(PSS, RSS) summed over its processes, in MiB. PSS splits shared pages fairly
        (torch's libraries are shared between workers), RSS counts them once per process."""
        pss = rss = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in ("Pss", "Rss"):
                        kib = int(value.split()[0])
                        pss, rss = (pss + kib, rss) if key == "Pss" else (pss, rss + kib)
            except OSError:
                continue
        return pss / 1024, rss / 1024

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        # Whatever the group left behind (LitServe's workers can outlive their parent).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def fashion_serve(model: Path | None, log: Path, **settings: object) -> Iterator[ServerProcess]:
    """A fresh ``fashion-serve`` serving ``model`` (None: a model_repository setting) on the
    CPU, ready; each keyword a FASHION_ setting (log_level="info"). Stopped, with everything
    it started, on exit."""
    env = {"FASHION_DEVICE": "cpu", "FASHION_LOG_LEVEL": "warning"}
    if model is not None:
        env["FASHION_MODEL_PATH"] = str(model)
    env |= {f"FASHION_{name.upper()}": str(value) for name, value in settings.items()}
    port = free_port()
    server = ServerProcess("fashion-serve", ["-m", "app.serve", "--port", str(port)], port, log, env)
    try:
        server.wait_ready(timeout=300)
        yield server
    finally:
        server.stop()
