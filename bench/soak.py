"""Soak: thousands of uploads at high concurrency, with bad ones mixed in, against a live server.

    python -m bench.soak                         # starts fashion-serve on the shipped model
    python -m bench.soak --port 8000 --pid 1234  # drives a server that is already running

Every answer is checked: no 5xx, no dropped connection, each good image gets the class the
model gives it offline, each bad input a 4xx. The server's resident memory is read after
the first ``--warm-up`` requests and at the end; the growth between them is what a leak
would show.

The client is threads, each with one keep-alive ``http.client`` connection: on two cores
an asyncio client (httpx) spends more CPU per request than the server it measures.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.server_process import ServerProcess, child_processes, free_port
from bench.uploads import CONTENT_TYPE, Upload, bad_inputs, multipart, offline_classes, sample_pngs

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "model.pth"
# Distinct good images: enough variety to meet every class and preprocessing path, few
# enough that computing their classes offline takes a second or two.
DISTINCT_IMAGES = 1000
# Resident memory may grow this much from the warm-up to the end: caches and allocator
# pools settle, a leak keeps going (one 28x28 request is a few kilobytes).
MAX_GROWTH_PCT = 10.0


@dataclass
class SoakResult:
    requests: int
    concurrency: int
    good: int  # well-formed images sent
    bad: int  # bad inputs sent
    statuses: dict[int, int]
    server_errors: int  # 5xx answers
    dropped: int  # requests that got no answer: connection reset, closed or timed out
    wrong: int  # good images answered with another class than the model gives offline
    bad_not_4xx: int  # bad inputs answered with anything but a 4xx
    seconds: float
    rss_kib_after_warm_up: int
    rss_kib_at_end: int
    images: str  # where the good images came from
    examples: list[str] = field(default_factory=list)  # the first few problems, for the log

    @property
    def passed(self) -> bool:
        """No 5xx, nothing dropped, no wrong answer, a 4xx for every bad input, growth within 10%."""
        problems = self.server_errors + self.dropped + self.wrong + self.bad_not_4xx
        return problems == 0 and self.memory_growth_pct <= MAX_GROWTH_PCT

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def memory_growth_pct(self) -> float:
        return 100 * (self.rss_kib_at_end - self.rss_kib_after_warm_up) / self.rss_kib_after_warm_up

    def summary(self) -> str:
        return (
            f"{self.requests} requests ({self.bad} bad) at concurrency {self.concurrency} in "
            f"{self.seconds:.1f} s ({self.requests_per_s:.0f}/s): statuses {self.statuses}, "
            f"5xx {self.server_errors}, dropped {self.dropped}, wrong answers {self.wrong}, "
            f"bad inputs without a 4xx {self.bad_not_4xx}; RSS {self.rss_kib_after_warm_up / 1024:.1f} MiB "
            f"after warm-up, {self.rss_kib_at_end / 1024:.1f} MiB at the end ({self.memory_growth_pct:+.1f}%)"
        )


def resident_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants (the inference process), from /proc."""
    tree, total, todo = child_processes(), 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        try:
            lines = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            if current == pid:
                raise RuntimeError(f"no VmRSS for process {pid}") from None
            continue  # a child that exited meanwhile
        total += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total


def _class_index(payload: bytes) -> int | None:
    try:
        return int(json.loads(payload)["class_index"])
    except (ValueError, KeyError, TypeError):
        return None


def build_uploads(
    requests: int, bad_fraction: float, model_path: Path, data_dir: Path | None, seed: int
) -> tuple[list[Upload], str]:
    """The whole schedule, shuffled once with ``seed``: the same run every time."""
    pngs, source = sample_pngs(min(DISTINCT_IMAGES, requests), data_dir)
    classes = offline_classes(model_path, pngs)
    good = [(data, expected) for data, expected in zip(pngs, classes, strict=True) if expected is not None]
    n_bad = round(requests * bad_fraction)
    uploads = [
        Upload(multipart(data), good=True, expected=expected)
        for data, expected in itertools.islice(itertools.cycle(good), requests - n_bad)
    ]
    uploads += [
        Upload(multipart(data, filename), good=False, expected=None)
        for filename, data in bad_inputs(pngs, n_bad, seed)
    ]
    random.Random(seed).shuffle(uploads)
    return uploads, source


def soak(
    host: str,
    port: int,
    pid: int,
    model_path: Path = SHIPPED_MODEL,
    *,
    requests: int = 5000,
    concurrency: int = 32,
    bad_fraction: float = 0.1,
    warm_up: int = 500,
    data_dir: Path | None = None,
    seed: int = 0,
    timeout: float = 60.0,
) -> SoakResult:
    """Send ``requests`` uploads from ``concurrency`` threads to POST /predict and check each answer.

    ``pid`` is the server process whose memory is read; ``model_path`` the checkpoint it serves.
    """
    uploads, source = build_uploads(requests, bad_fraction, model_path, data_dir, seed)
    statuses: Counter[int] = Counter()
    problems: Counter[str] = Counter()
    examples: list[str] = []
    lock = threading.Lock()
    done = 0
    rss_after_warm_up = 0
    next_index = itertools.count()  # next() on a count is atomic under the GIL

    def record(problem: str | None, status: int | None, detail: str) -> None:
        nonlocal done, rss_after_warm_up
        with lock:
            if status is not None:
                statuses[status] += 1
            if problem:
                problems[problem] += 1
                if len(examples) < 10:
                    examples.append(f"{problem}: {detail}")
            done += 1
            if done == warm_up:
                rss_after_warm_up = resident_kib(pid)

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"Content-Type": CONTENT_TYPE}
        while (index := next(next_index)) < len(uploads):
            upload = uploads[index]
            try:
                connection.request("POST", "/predict", body=upload.body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # the next request opens a fresh one
                record("dropped", None, f"request {index}: {type(exc).__name__}: {exc}")
                continue
            status = response.status
            problem = None
            if status >= 500:
                problem = "5xx"
            elif not upload.good and not 400 <= status < 500:
                problem = "bad_not_4xx"
            elif upload.good and (status != 200 or _class_index(payload) != upload.expected):
                problem = "wrong"
            record(problem, status, f"request {index}: {status} {payload[:200]!r}")
        connection.close()

    threads = [threading.Thread(target=worker, name=f"soak-{i}") for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return SoakResult(
        requests=done,  # short of the schedule only if a client thread died
        concurrency=concurrency,
        good=sum(upload.good for upload in uploads),
        bad=sum(not upload.good for upload in uploads),
        statuses=dict(sorted(statuses.items())),
        server_errors=problems["5xx"],
        dropped=problems["dropped"],
        wrong=problems["wrong"],
        bad_not_4xx=problems["bad_not_4xx"],
        seconds=seconds,
        rss_kib_after_warm_up=rss_after_warm_up or resident_kib(pid),
        rss_kib_at_end=resident_kib(pid),
        images=source,
        examples=examples,
    )


def soak_fresh_server(model_path: Path, log: Path, **options: Any) -> SoakResult:
    """Start ``fashion-serve`` on ``model_path``, soak it, stop it."""
    port = free_port()
    env = {"FASHION_MODEL_PATH": str(model_path), "FASHION_DEVICE": "cpu", "FASHION_LOG_LEVEL": "warning"}
    server = ServerProcess("fashion-serve", ["-m", "app.serve", "--port", str(port)], port, log, env)
    try:
        server.wait_ready(timeout=300)
        return soak("127.0.0.1", port, server.process.pid, model_path, **options)
    finally:
        server.stop()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Soak POST /predict with good and bad uploads and check every answer",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bad-fraction", type=float, default=0.1, help="share of bad inputs")
    parser.add_argument("--warm-up", type=int, default=500, help="requests before the first memory reading")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="the checkpoint the server serves")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the real Fashion-MNIST (found if not given)"
    )
    parser.add_argument("--port", type=int, default=None, help="drive a running server; else start one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pid", type=int, default=None, help="the running server's process, for memory")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    options: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "bad_fraction": args.bad_fraction,
        "warm_up": min(args.warm_up, args.requests),
        "data_dir": args.data_dir,
    }
    if args.port is None:
        with tempfile.TemporaryDirectory() as tmp:
            result = soak_fresh_server(args.model, Path(tmp) / "server.log", **options)
    else:
        if args.pid is None:
            raise SystemExit("error: --port needs --pid, the server's process, to read its memory")
        result = soak(args.host, args.port, args.pid, args.model, **options)
    print(result.summary())
    for example in result.examples:
        print("  " + example)
    if args.json:
        args.json.write_text(
            json.dumps({**asdict(result), "requests_per_s": result.requests_per_s}, indent=2)
        )


if __name__ == "__main__":
    main()
