"""The graceful-shutdown drill: every request in flight at SIGTERM must still be answered.

    python -m bench.shutdown                 # fashion-serve on the shipped model, 20 requests

It starts ``fashion-serve``, opens one connection per request and sends the headers and
most of the multipart body, then waits until the kernel shows the server has read all of
it (receive queue empty on the server's side of each connection): the server has parsed
each request and is waiting for the rest of its body, so each is in flight. Then SIGTERM;
once the server says it is waiting for connections to close, a new connection must be
refused. Only then does each client send the rest of its body: an answer proves the
request was carried across the SIGTERM. Last, the server must exit with status 0.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.server_process import ServerProcess, free_port
from bench.uploads import multipart, offline_classes, request_head, sample_pngs

TAIL = 64  # bytes of each body held back until after SIGTERM
# uvicorn's log lines: the first once it stops accepting, the second if the grace runs out.
WAITING = "Waiting for connections to close"
CANCELLED = "timeout graceful shutdown exceeded"


class PartialRequest:
    """POST /predict on a raw socket, sent in two parts."""

    def __init__(self, port: int, body: bytes, timeout: float = 60.0) -> None:
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(request_head("/predict", len(body)) + body[:-TAIL])

    @property
    def client_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def finish(self) -> tuple[int, bytes, dict[str, str]]:
        """Send the rest of the body; the status, body and headers of the answer."""
        self.sock.sendall(self.body[-TAIL:])
        response = http.client.HTTPResponse(self.sock)
        try:
            response.begin()
            return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


def unread_bytes(server_port: int, client_ports: set[int]) -> dict[int, int]:
    """Per client port: bytes the kernel holds for the server, not yet read by it (rx_queue)."""
    unread = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port in client_ports:
                unread[remote_port] = int(fields[4].split(":")[1], 16)
    return unread


def wait_until_read(server_port: int, requests: list[PartialRequest], timeout: float = 120.0) -> int:
    """Wait until the server has read every byte sent so far on each connection; how many it has."""
    ports = {request.client_port for request in requests}
    deadline = time.monotonic() + timeout
    while True:
        unread = unread_bytes(server_port, ports)
        read = sum(1 for port in ports if unread.get(port) == 0)
        if read == len(ports) or time.monotonic() > deadline:
            return read
        time.sleep(0.05)


def wait_for_log(log: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class ShutdownResult:
    requests: int
    in_flight_at_sigterm: int  # requests the server had fully read up to the held-back tail
    refused_after_sigterm: bool  # a new connection, once the server was shutting down
    statuses: dict[int, int]
    correct: int  # 200s with the class the model gives that image offline
    failures: list[str]  # requests without an answer, or with a wrong one
    exit_code: int | None
    seconds_to_exit: float  # from SIGTERM
    grace_s: int
    cancelled: bool  # the grace ran out and the server cancelled what was left
    server_headers: dict[str, str] = field(default_factory=dict)  # of one answer
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.in_flight_at_sigterm == self.requests
            and self.refused_after_sigterm
            and self.correct == self.requests
            and self.exit_code == 0
            and not self.cancelled
        )

    def summary(self) -> str:
        return (
            f"{self.in_flight_at_sigterm}/{self.requests} requests in flight at SIGTERM; new connection "
            f"{'refused' if self.refused_after_sigterm else 'ACCEPTED'}; answers {self.statuses}, "
            f"{self.correct} correct; exit status {self.exit_code} {self.seconds_to_exit:.1f} s after "
            f"SIGTERM (grace {self.grace_s} s)"
        )


def drill(model_path: Path, workdir: Path, *, requests: int = 20, grace_s: int = 20) -> ShutdownResult:
    """Run the drill against a fresh ``fashion-serve`` serving ``model_path``."""
    pngs, _ = sample_pngs(requests)
    expected = offline_classes(model_path, pngs)
    port = free_port()
    log = workdir / "shutdown-server.log"
    env = {
        "FASHION_MODEL_PATH": str(model_path),
        "FASHION_DEVICE": "cpu",
        "FASHION_SHUTDOWN_GRACE_S": str(grace_s),
        # Each body is held open across the SIGTERM: its deadline must not be what ends it.
        "FASHION_BODY_TIMEOUT_S": "600",
    }
    server = ServerProcess("fashion-serve", ["-m", "app.serve", "--port", str(port)], port, log, env)
    clients: list[PartialRequest] = []
    try:
        server.wait_ready(timeout=300)
        clients = [PartialRequest(port, multipart(data)) for data in pngs]
        in_flight = wait_until_read(port, clients)
        sigterm_at = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        # Logged once the listening socket is closed and the open connections were told to finish.
        shutting_down = wait_for_log(log, WAITING, timeout=grace_s)
        refused = shutting_down and connection_refused(port)
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        headers: dict[str, str] = {}
        for index, client in enumerate(clients):
            try:
                status, body, headers = client.finish()
            except OSError as exc:
                failures.append(f"request {index}: no answer ({type(exc).__name__}: {exc})")
                continue
            statuses[status] += 1
            try:
                answered = json.loads(body).get("class_index") if status == 200 else None
            except ValueError:
                answered = None
            if answered is None or (expected[index] is not None and answered != expected[index]):
                failures.append(f"request {index}: {status} {body[:200]!r}")
        try:
            # Draining takes at most the grace (then uvicorn cancels, and says so in the log);
            # the rest is the lifespan's shutdown, which a loaded machine can slow a lot.
            exit_code: int | None = server.process.wait(timeout=grace_s + 60)
        except subprocess.TimeoutExpired:
            exit_code = None
        seconds = time.monotonic() - sigterm_at
    finally:
        for client in clients:
            client.close()
        server.stop()
    return ShutdownResult(
        requests=requests,
        in_flight_at_sigterm=in_flight,
        refused_after_sigterm=refused,
        statuses=dict(sorted(statuses.items())),
        correct=requests - len(failures),
        failures=failures,
        exit_code=exit_code,
        seconds_to_exit=seconds,
        grace_s=grace_s,
        cancelled=CANCELLED in log.read_text(errors="replace"),
        server_headers=headers,
        log_tail=log.read_text(errors="replace")[-3000:],
    )


def main(argv: list[str] | None = None) -> None:
    from bench.soak import SHIPPED_MODEL

    parser = argparse.ArgumentParser(
        description="Check that fashion-serve answers the requests in flight when it gets SIGTERM",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--grace", type=int, default=20, help="FASHION_SHUTDOWN_GRACE_S for the server")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = drill(args.model, Path(tmp), requests=args.requests, grace_s=args.grace)
    print(result.summary())
    for failure in result.failures:
        print("  " + failure)
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
