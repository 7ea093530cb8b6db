"""The live model changes' part of docs/RELIABILITY.md (bench/repository_drill.py)."""

from __future__ import annotations

from collections import Counter

from bench import repository_drill
from bench.repository_drill import RepositoryDrillResult


def _mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def _statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in statuses.items()) or "none"


def repository_row(result: RepositoryDrillResult) -> str:
    load = result.load
    steps_ok = sum(step.ok for step in result.steps)
    return (
        f"| Live model changes | 4 changes under wrk c{repository_drill.WRK_CONNECTIONS} "
        f"({steps_ok}/{len(result.steps)} as expected); {load.non_2xx} non-2xx, "
        f"{load.errors - load.non_2xx} socket errors; p99 {load.p99_ms:.1f} ms against "
        f"{result.quiet.p99_ms:.1f} ms without changes; {repository_drill.CYCLES} unload/load cycles "
        f"{result.growth_mib:+.1f} MiB | {_mark(result.ok)} |"
    )


def repository_section(result: RepositoryDrillResult) -> list[str]:
    quiet, load = result.quiet, result.load
    lines = [
        "",
        "## Live model changes",
        "",
        "A model repository holding copies of the shipped model, `fashion/1` (the default model) and "
        f"`canary/1`, served with `FASHION_MODEL_REPOSITORY` (bench/repository_drill.py). wrk posts 28x28 "
        f"PNGs to /predict at concurrency {repository_drill.WRK_CONNECTIONS} for "
        f"{repository_drill.WRK_SECONDS:g} s, once without changes and once while, "
        f"{repository_drill.STEP_EVERY_S:g} s apart, the changes below are made and "
        "`POST /v2/repository/models/fashion/load` called. After each call returns, /predict and "
        "`GET /v2/models/fashion` are polled until they show the new state. Pass: no non-2xx answer and "
        f"no socket error, each call answered as expected and its state seen within "
        f"{repository_drill.SWITCH_WITHIN_S:g} s, p99 at most {repository_drill.P99_FACTOR:g}x the "
        f"baseline's; then {repository_drill.CYCLES} cycles of unloading and loading `canary` grow the "
        f"RSS of the server and all its processes (same state, 1 s after) by less than "
        f"{repository_drill.MAX_GROWTH_MIB:g} MiB.",
        "",
        "| Change | Load call | Took | New state seen | |",
        "|---|---|---|---|---|",
    ]
    for step in result.steps:
        answer = f"{step.status}" + (f" `{step.error[:140]}`" if step.error else "")
        lines.append(
            f"| {step.what} | {answer} | {step.call_s:.2f} s | "
            f"{'never' if step.seen_after_s is None else f'{step.seen_after_s * 1000:.0f} ms'} | "
            f"{_mark(step.ok)} |"
        )
    lines += [
        "",
        "| Measure | Without changes | During the changes |",
        "|---|---|---|",
        f"| Requests | {quiet.requests} | {load.requests} |",
        f"| Requests/s | {quiet.rps:.0f} | {load.rps:.0f} |",
        f"| Non-2xx answers | {quiet.non_2xx} | {load.non_2xx} |",
        f"| Socket errors | {quiet.errors - quiet.non_2xx} | {load.errors - load.non_2xx} |",
        f"| p50, p99 | {quiet.p50_ms:.1f} ms, {quiet.p99_ms:.1f} ms | {load.p50_ms:.1f} ms, "
        f"{load.p99_ms:.1f} ms ({load.p99_ms / quiet.p99_ms:.2f}x) |",
        "",
        f"Memory: RSS {result.rss_before_mib:.0f} MiB after one unload/load cycle of `canary`, "
        f"{result.rss_after_mib:.0f} MiB after {repository_drill.CYCLES} more "
        f"({result.growth_mib:+.1f} MiB); calls answered: "
        f"{_statuses(dict(Counter(result.cycle_statuses)))}.",
        "",
    ]
    return lines
