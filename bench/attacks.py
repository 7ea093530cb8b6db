"""Attack drills: files built to exhaust the server's memory or CPU, and a frozen inference process.

    python -m bench.attacks                        # all four, each against a fresh fashion-serve
    python -m bench.attacks --drill cpu --quick    # one of memory, cpu, frozen, slowloris

1. memory (bench/memory_bombs.py): an ICO hiding a 13000x13000 PNG, then a truncated
   4000x4000 PNG, 16 clients at once, twice: every answer a 4xx, memory back within 100 MiB;
2. cpu (bench/cpu_bomb.py): batches of progressive JPEGs whose scan repeats 63 times while
   wrk measures 28x28 requests: wrk unharmed, each bomb a 400 within the decode budget + 1 s;
3. frozen (bench/frozen_worker.py): SIGSTOP to the inference process under load: /health
   503 within 5 s, a new process serving within 10 s, no request past its timeout;
4. slowloris (bench/slowloris.py): 200 connections trickling a request head a byte a second
   while wrk measures 28x28 requests: wrk unharmed, every slow connection closed.

The files are built by bench/attack_images.py; ``python -m bench.reliability`` runs the
drills with its other checks and reports them in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.cpu_bomb import CPU_SECONDS, QUICK_CPU_SECONDS, CpuBombResult, cpu_drill
from bench.frozen_worker import FrozenWorkerResult, frozen_worker_drill
from bench.memory_bombs import MemoryResult, memory_drill
from bench.slowloris import SlowlorisResult, slowloris_drill
from bench.soak import SHIPPED_MODEL


@dataclass
class AttackResults:
    memory: list[MemoryResult]
    cpu: CpuBombResult
    frozen: FrozenWorkerResult
    slowloris: SlowlorisResult


def run_attacks(model: Path, workdir: Path, cpu_seconds: float = CPU_SECONDS) -> AttackResults:
    """Every drill, one after the other."""
    return AttackResults(
        memory_drill(model, workdir),
        cpu_drill(model, workdir, cpu_seconds),
        frozen_worker_drill(model, workdir),
        slowloris_drill(model, workdir),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Attack a fresh fashion-serve: memory and CPU bombs, a frozen worker, slowloris",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--drill",
        choices=("memory", "cpu", "frozen", "slowloris"),
        help="run only this one; all when not given",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"the cpu drill for {QUICK_CPU_SECONDS:g} s, not {CPU_SECONDS:g}"
    )
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    args = parser.parse_args(argv)
    seconds = QUICK_CPU_SECONDS if args.quick else CPU_SECONDS
    drills: dict[str, Callable[[Path], bool]] = {  # each says whether it passed
        "memory": lambda workdir: all(case.ok for case in memory_drill(args.model, workdir)),
        "cpu": lambda workdir: cpu_drill(args.model, workdir, seconds).ok,
        "frozen": lambda workdir: frozen_worker_drill(args.model, workdir).ok,
        "slowloris": lambda workdir: slowloris_drill(args.model, workdir).ok,
    }
    with tempfile.TemporaryDirectory() as tmp:
        failed = []
        for name in [args.drill] if args.drill else list(drills):
            print(f"{name} ...", flush=True)
            if not drills[name](Path(tmp)):
                failed.append(name)
    print(f"failed: {', '.join(failed)}" if failed else "every drill passed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
