"""One command for every reliability check, and docs/RELIABILITY.md from the results.

    python -m bench.reliability            # a few minutes on two idle cores
    python -m bench.reliability --quick    # fewer fuzz examples and soak requests, a shorter CPU bomb

Each check runs against ``fashion-serve`` on the shipped model, started for it:

1. the bad-upload corpus (bench/bad_inputs.py): each case and the status it got;
2. schemathesis on the server's own OpenAPI document (bench/fuzz.py);
3. the soak (bench/soak.py): good and bad uploads at concurrency 32, answers and memory;
4. the graceful-shutdown drill (bench/shutdown.py): 20 requests in flight at SIGTERM;
5. the memory bombs (bench/memory_bombs.py): an ICO hiding a 13000x13000 PNG, a truncated 4000x4000
   PNG, 16 at once, twice: answers and memory;
6. the CPU bomb (bench/cpu_bomb.py): progressive JPEGs with a scan repeated 63 times, posted in
   batches while wrk measures the small requests;
7. the frozen inference process (bench/frozen_worker.py): SIGSTOP under load, time to recover;
8. slowloris (bench/slowloris.py): 200 connections trickling request heads while wrk measures;
9. bad checkpoints (bench/bad_checkpoints.py): each refused by fashion-serve in one line;
10. live model changes (bench/repository_drill.py): versions added, removed, refused and
    restored under wrk, then load/unload cycles for memory.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.attacks import AttackResults, run_attacks
from bench.bad_checkpoints import bad_checkpoints
from bench.bad_inputs import corpus, run_case
from bench.cpu_bomb import CPU_SECONDS, QUICK_CPU_SECONDS
from bench.fuzz import FuzzResult, run_cli
from bench.reliability_report import load_average, machine, write_report
from bench.repository_drill import RepositoryDrillResult, repository_drill
from bench.server_process import ServerProcess, free_port
from bench.shutdown import ShutdownResult, drill
from bench.soak import SHIPPED_MODEL, SoakResult, soak_fresh_server

REPO = Path(__file__).resolve().parents[1]
# Short enough that the corpus's two bodies that never end are cut off well within
# run_case's 30 s; the default (30 s) would leave them unanswered by then.
BODY_TIMEOUT_S = 5


@dataclass
class CaseResult:
    name: str
    why: str
    expected: list[int]
    got: int | None

    @property
    def ok(self) -> bool:
        return self.got in self.expected


@dataclass
class BadUploadResult:
    cases: list[CaseResult]
    healthy_after: bool  # /health still answered 200 after the whole corpus


def healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def bad_uploads_and_fuzz(model: Path, workdir: Path, examples: int) -> tuple[BadUploadResult, FuzzResult]:
    """The corpus, then schemathesis, against one fresh server with the default settings."""
    port = free_port()
    env = {
        "FASHION_MODEL_PATH": str(model),
        "FASHION_DEVICE": "cpu",
        "FASHION_LOG_LEVEL": "warning",
        "FASHION_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    command = ["-m", "app.serve", "--port", str(port)]
    server = ServerProcess("fashion-serve", command, port, workdir / "bad-uploads-server.log", env)
    try:
        server.wait_ready(timeout=300)
        cases = [
            CaseResult(
                case.name, case.why, sorted(case.expected), run_case("127.0.0.1", port, case, timeout=30)
            )
            for case in corpus()
        ]
        bad = BadUploadResult(cases, healthy_after=healthy(port))
        fuzzed = run_cli(f"http://127.0.0.1:{port}", examples, workdir)
    finally:
        server.stop()
    return bad, fuzzed


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the reliability checks against fashion-serve and write docs/RELIABILITY.md",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--examples", type=int, default=50, help="schemathesis examples per operation")
    parser.add_argument("--soak-requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--in-flight", type=int, default=20, help="requests in flight at SIGTERM")
    parser.add_argument("--grace", type=int, default=20, help="FASHION_SHUTDOWN_GRACE_S for the drill")
    parser.add_argument(
        "--cpu-bomb-seconds", type=float, default=CPU_SECONDS, help="the CPU bomb drill's length"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"10 examples, 1,000 soak requests, a {QUICK_CPU_SECONDS:g} s CPU bomb",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "RELIABILITY.md")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.examples, args.soak_requests = min(args.examples, 10), min(args.soak_requests, 1000)
        args.cpu_bomb_seconds = min(args.cpu_bomb_seconds, QUICK_CPU_SECONDS)
    started = time.monotonic()
    context = machine()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("bad uploads and fuzzing ...", flush=True)
        bad, fuzzed = bad_uploads_and_fuzz(args.model, workdir, args.examples)
        print("soak ...", flush=True)
        soaked: SoakResult = soak_fresh_server(
            args.model,
            workdir / "soak-server.log",
            requests=args.soak_requests,
            concurrency=args.concurrency,
            warm_up=min(500, args.soak_requests // 10),
        )
        print("graceful shutdown ...", flush=True)
        shutdown: ShutdownResult = drill(args.model, workdir, requests=args.in_flight, grace_s=args.grace)
        print("attack drills ...", flush=True)
        attacks: AttackResults = run_attacks(args.model, workdir, cpu_seconds=args.cpu_bomb_seconds)
        print("bad checkpoints ...", flush=True)
        checkpoints = bad_checkpoints(args.model, workdir)
        print("live model changes ...", flush=True)
        repository: RepositoryDrillResult = repository_drill(args.model, workdir)
    context |= {
        "load_average_at_end": load_average(),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "model": f"{args.model.name} (sha256 {hashlib.sha256(args.model.read_bytes()).hexdigest()[:12]})",
        "command": "python -m bench.reliability" + (" --quick" if args.quick else ""),
        "body_timeout_s": BODY_TIMEOUT_S,
    }
    write_report(args.output, context, bad, fuzzed, soaked, shutdown, attacks, checkpoints, repository)
    failed = [
        name
        for name, ok in [
            ("bad uploads", all(case.ok for case in bad.cases) and bad.healthy_after),
            ("fuzzing", fuzzed.ok),
            ("soak", soaked.passed),
            ("shutdown", shutdown.ok),
            *[(f"memory bomb ({case.case})", case.ok) for case in attacks.memory],
            ("CPU bomb", attacks.cpu.ok),
            ("frozen inference process", attacks.frozen.ok),
            ("slowloris", attacks.slowloris.ok),
            *[(f"checkpoint ({case.name})", case.ok) for case in checkpoints],
            ("live model changes", repository.ok),
        ]
        if not ok
    ]
    print(f"wrote {args.output}; {'failed: ' + ', '.join(failed) if failed else 'every check passed'}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
