"""docs/RELIABILITY.md from the results of bench/reliability.py, and the machine they came from."""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.http_protocol import HEAD_TIMEOUT_S
from bench import cpu_bomb, frozen_worker, memory_bombs, slowloris
from bench.bad_checkpoints import CheckpointCase
from bench.repository_report import repository_row, repository_section

if TYPE_CHECKING:
    from bench.attacks import AttackResults
    from bench.fuzz import FuzzResult
    from bench.memory_bombs import MemoryResult
    from bench.reliability import BadUploadResult
    from bench.repository_drill import RepositoryDrillResult
    from bench.shutdown import ShutdownResult
    from bench.soak import SoakResult

PACKAGES = ("torch", "fastapi", "starlette", "uvicorn", "python-multipart", "pillow", "schemathesis")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: what else the machine was doing."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Where and when: CPU, cores, memory, platform, versions, load average."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "")
    meminfo = Path("/proc/meminfo")
    memory_gib = round(int(meminfo.read_text().split()[1]) / 2**20, 1) if meminfo.exists() else None
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": load_average(),
    }


def _mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def _statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in statuses.items()) or "none"


def write_report(
    path: Path,
    context: dict[str, Any],
    bad: BadUploadResult,
    fuzzed: FuzzResult,
    soaked: SoakResult,
    shutdown: ShutdownResult,
    attacks: AttackResults,
    checkpoints: list[CheckpointCase],
    repository: RepositoryDrillResult,
) -> None:
    passed = sum(case.ok for case in bad.cases)
    versions = ", ".join(f"{name} {version}" for name, version in context["versions"].items())
    lines = [
        "# Reliability",
        "",
        f"Written by `{context['command']}` on {context['date']} in {context['minutes']} minutes;",
        "do not edit by hand, run it again. Every check runs against `fashion-serve`",
        f"(`python -m app.serve`) serving {context['model']} on the CPU, started afresh for it.",
        "",
        f"Machine: {context['host']}, {context['cpu']}, {context['cores']} cores, "
        f"{context['memory_gib']} GiB; "
        f"{context['platform']}; Python {context['python']}; {versions}. Load average (1, 5, 15 min): "
        f"{context['load_average_at_start']} at the start, {context['load_average_at_end']} at the end: "
        "other work on the machine slows the soak's requests/s, not its answers.",
        "",
        "| Check | Result | |",
        "|---|---|---|",
        f"| Bad uploads | {passed}/{len(bad.cases)} answered as documented; /health "
        f"{'still 200' if bad.healthy_after else 'NOT 200'} afterwards | "
        f"{_mark(passed == len(bad.cases) and bad.healthy_after)} |",
        f"| Fuzzing (schemathesis) | {fuzzed.generated} requests over {fuzzed.operations} operations, "
        f"{len(fuzzed.failures)} kinds of failure, {len(fuzzed.errors)} errors | {_mark(fuzzed.ok)} |",
        f"| Soak | {soaked.requests} requests, {soaked.server_errors} 5xx, {soaked.dropped} dropped, "
        f"{soaked.wrong} wrong answers, memory {soaked.memory_growth_pct:+.1f}% | {_mark(soaked.passed)} |",
        f"| Graceful shutdown | {shutdown.correct}/{shutdown.requests} in-flight requests answered, "
        f"exit status {shutdown.exit_code} | {_mark(shutdown.ok)} |",
        *_attack_rows(attacks),
        f"| Bad checkpoints | {sum(case.ok for case in checkpoints)}/{len(checkpoints)} refused by "
        f"fashion-serve in one line, exit status 2, before a port opened | "
        f"{_mark(all(case.ok for case in checkpoints))} |",
        repository_row(repository),
        "",
        "## Bad uploads",
        "",
        "The corpus of bench/bad_inputs.py, each case a raw HTTP/1.1 request; the server runs with",
        f"the default settings except FASHION_BODY_TIMEOUT_S={context['body_timeout_s']}, so that the",
        "bodies that never end are cut off within the client's 30 s. No answer is shown as `none`.",
        "",
        "| Case | Expected | Got | | Why |",
        "|---|---|---|---|---|",
    ]
    for case in bad.cases:
        expected = " or ".join(map(str, case.expected))
        why = case.why.replace("|", "\\|")
        lines.append(f"| `{case.name}` | {expected} | {case.got or 'none'} | {_mark(case.ok)} | {why} |")
    lines += [
        "",
        "## Fuzzing",
        "",
        f"`{fuzzed.command}`",
        "",
        f"Up to {fuzzed.examples_per_operation} generated requests per operation plus schemathesis's",
        "coverage cases (boundaries, missing fields, wrong types, other methods), from the server's own",
        "/openapi.json with uploads marked `format: binary` so that some carry real PNG, JPEG, GIF",
        f"and WebP files (bench/fuzz.py). {fuzzed.generated} requests in all.",
        "",
        "Schema-valid requests per operation, and how the server took them (a valid upload may still",
        "be bytes that are no image, which is a 4xx):",
        "",
        "| Operation | Accepted | Rejected |",
        "|---|---|---|",
    ]
    for operation, phases in fuzzed.valid_rates.items():
        accepted = sum(phase.get("accepted", 0) for phase in phases.values())
        rejected = sum(phase.get("rejected", 0) for phase in phases.values())
        lines.append(f"| `{operation}` | {accepted} | {rejected} |")
    lines += ["", "Failures: " + ("; ".join(fuzzed.failures + fuzzed.errors) or "none") + "."]
    lines += [
        "",
        "## Soak",
        "",
        f"{soaked.requests} POST /predict from {soaked.concurrency} threads on keep-alive connections: "
        f"{soaked.good} good images ({soaked.images}) and {soaked.bad} bad inputs (random bytes, truncated "
        "PNGs, text named .png), shuffled. Each good image must get the class the model gives it offline.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Requests/s | {soaked.requests_per_s:.0f} ({soaked.seconds:.1f} s) |",
        f"| Statuses | {_statuses(soaked.statuses)} |",
        f"| 5xx | {soaked.server_errors} |",
        f"| Dropped connections | {soaked.dropped} |",
        f"| Wrong answers | {soaked.wrong} |",
        f"| Bad inputs without a 4xx | {soaked.bad_not_4xx} |",
        f"| Server RSS after the warm-up | {soaked.rss_kib_after_warm_up / 1024:.1f} MiB |",
        f"| Server RSS at the end | {soaked.rss_kib_at_end / 1024:.1f} MiB |",
        f"| Growth | {soaked.memory_growth_pct:+.1f}% |",
    ]
    lines += ["", *[f"- {example}" for example in soaked.examples]] if soaked.examples else []
    lines += [
        "",
        "## Graceful shutdown",
        "",
        f"{shutdown.requests} connections each sent the headers and all but the last bytes of a",
        "POST /predict; the kernel's receive queues showed the server had read them all",
        f"(bench/shutdown.py). Then SIGTERM, with FASHION_SHUTDOWN_GRACE_S={shutdown.grace_s}.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| In flight at SIGTERM | {shutdown.in_flight_at_sigterm}/{shutdown.requests} |",
        f"| New connection after SIGTERM | {'refused' if shutdown.refused_after_sigterm else 'ACCEPTED'} |",
        f"| Answers, once the bodies were finished | {_statuses(shutdown.statuses)} |",
        f"| Right class | {shutdown.correct}/{shutdown.requests} |",
        f"| Exit status | {shutdown.exit_code}, {shutdown.seconds_to_exit:.1f} s after SIGTERM |",
        f"| Grace ran out (requests cancelled) | {'yes' if shutdown.cancelled else 'no'} |",
        "",
    ]
    lines += [f"- {failure}" for failure in shutdown.failures]
    lines += _attack_sections(attacks)
    lines += _checkpoint_section(checkpoints)
    lines += repository_section(repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def _checkpoint_section(checkpoints: list[CheckpointCase]) -> list[str]:
    lines = [
        "",
        "## Bad checkpoints",
        "",
        "Variants of the shipped checkpoint, each broken in one place, served with "
        "`python -m app.serve` (bench/bad_checkpoints.py). Pass: exit status 2 with one line on "
        "stderr naming the file, before any port opens, and the pickle's code never run.",
        "",
        "| Case | What | Exit | Seconds | stderr | |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{case.name}` | {case.why} | {case.status} | {case.seconds:.1f} | "
        f"`{case.stderr.strip().splitlines()[0][:140] if case.stderr.strip() else ''}` | {_mark(case.ok)} |"
        for case in checkpoints
    ]
    return lines


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _after_stop(value: float | None) -> str:
    return "never" if value is None else f"after {value:.1f} s"


def _after(case: MemoryResult) -> str:
    return "killed by the guard" if case.killed_by_guard else f"{case.growth_mib:+.0f} MiB"


def _attack_rows(attacks: AttackResults) -> list[str]:
    cpu, frozen = attacks.cpu, attacks.frozen
    rows = [
        f"| Memory bomb: {case.case} | {sum(case.statuses.values())} answers ({_statuses(case.statuses)}), "
        f"{case.dropped} dropped; memory {case.peak_growth_mib:+.0f} MiB at the peak, "
        f"{'killed by the guard' if case.killed_by_guard else f'{case.growth_mib:+.0f} MiB after'} "
        f"| {_mark(case.ok)} |"
        for case in attacks.memory
    ]
    rows += [
        f"| CPU bomb | {cpu.refused_in_time}/{len(cpu.bombs)} bomb batches a 400 within "
        f"{cpu.budget_s + 1:g} s; small requests meanwhile p99 {cpu.load.p99_ms:.0f} ms, "
        f"{cpu.load.errors} errors | {_mark(cpu.ok)} |",
        f"| Frozen inference process | /health 503 {_after_stop(frozen.unhealthy_after_s)}, served "
        f"again {_after_stop(frozen.serving_after_s)}, slowest request {frozen.max_latency_s:.1f} s, "
        f"{frozen.statuses.get(500, 0)} x 500 | {_mark(frozen.ok)} |",
        f"| Slowloris | {attacks.slowloris.connections} slow connections all closed "
        f"{_after_stop(attacks.slowloris.all_closed_s)}; small requests meanwhile p99 "
        f"{attacks.slowloris.load.p99_ms:.0f} ms, {attacks.slowloris.load.errors} errors "
        f"| {_mark(attacks.slowloris.ok)} |",
    ]
    return rows


def _attack_sections(attacks: AttackResults) -> list[str]:
    cpu, frozen = attacks.cpu, attacks.frozen
    lines = [
        "",
        "## Memory bombs",
        "",
        "Small files that decode to much memory (bench/attack_images.py), posted to /predict by "
        f"{memory_bombs.CLIENTS} clients at once, {memory_bombs.BURSTS} times, each case against a fresh "
        "server with the default settings. `ico-bomb`: an ICO whose one entry is a 13000x13000 RGBA "
        "PNG (676 MB decoded; the ICO directory says 256x256). `truncated-png`: a 4000x4000 RGBA PNG cut "
        "at 90% of its pixel data. Memory is the RSS of the server and all its processes, sampled every "
        f"{memory_bombs.SAMPLE_S * 1000:.0f} ms; before: after 20 small images; after: "
        f"{memory_bombs.SETTLE_S:g} s after the last answer. Pass: every answer as expected, after within "
        f"{memory_bombs.MAX_GROWTH_MIB} MiB of before, the peak within the decoders' budget "
        f"({memory_bombs.DECODING_BUDGET_MIB} MiB: FASHION_DECODE_MEMORY_MB times FASHION_DECODE_PROCESSES). "
        f"A server past +{memory_bombs.GUARD_MIB} MiB (or half the free memory) is killed, and fails.",
        "",
        "| Case | Upload | Expected | Answers | Dropped | Slowest | RSS before | Peak | After | |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{case.case}` | {case.upload} | {case.expected or '4xx'} | {_statuses(case.statuses)} | "
        f"{case.dropped} | {case.max_latency_s:.1f} s | {case.rss_before_mib:.0f} MiB | "
        f"{case.peak_growth_mib:+.0f} MiB | {_after(case)} | {_mark(case.ok)} |"
        for case in attacks.memory
    ]
    bomb_statuses = dict(sorted(Counter(status or 0 for status, _ in cpu.bombs).items()))
    bomb_seconds = sorted(seconds for _, seconds in cpu.bombs) or [0.0]
    lines += [
        "",
        "## CPU bomb: slow progressive JPEGs",
        "",
        f"A {cpu.file_bytes:,}-byte progressive JPEG of 4000x4000 whose last scan is repeated 63 times costs "
        f"{cpu.decode_cpu_s:.2f} s of CPU to decode with Pillow ({cpu.draft_cpu_s:.2f} s drafted to "
        f"{cpu_bomb.DRAFT_SIDE}x{cpu_bomb.DRAFT_SIDE}, as the server decodes a big JPEG). For "
        f"{cpu.load.seconds:.0f} s, {cpu_bomb.BOMB_CLIENTS} clients loop posting /predict/batch with "
        f"{cpu_bomb.BOMB_FILES} of them while wrk posts 28x28 PNGs to /predict at concurrency "
        f"{cpu_bomb.WRK_CONNECTIONS}; the server has FASHION_DECODE_CPU_S={cpu.budget_s:g}. Pass: wrk sees "
        f"no error and a p99 under {cpu_bomb.WRK_P99_MS:.0f} ms, and every bomb request is answered 400 "
        f"within {cpu.budget_s + 1:g} s (the budget and 1 s).",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Small requests/s | {cpu.load.rps:.0f} |",
        f"| Small requests p50, p99 | {cpu.load.p50_ms:.1f} ms, {cpu.load.p99_ms:.1f} ms |",
        f"| Small requests' errors | {cpu.load.errors} |",
        f"| Bomb requests | {len(cpu.bombs)}: {_statuses(bomb_statuses)} (0: no answer) |",
        f"| Bomb latency, median and slowest | {bomb_seconds[len(bomb_seconds) // 2]:.1f} s, "
        f"{bomb_seconds[-1]:.1f} s |",
        f"| Bombs answered 400 within {cpu.budget_s + 1:g} s | {cpu.refused_in_time}/{len(cpu.bombs)} |",
        "",
        "## Frozen inference process",
        "",
        f"{frozen_worker.CLIENTS} clients loop POST /predict; after {frozen_worker.LOAD_S:g} s the inference "
        "process (from the log line `inference process <pid> ready`) gets SIGSTOP: alive and silent. "
        f"/health is polled every {frozen_worker.POLL_S * 1000:.0f} ms; the server has "
        f"FASHION_REQUEST_TIMEOUT_S={frozen.request_timeout_s:g} (bench/frozen_worker.py). Pass: /health 503 "
        f"within {frozen_worker.UNHEALTHY_WITHIN_S:g} s, a new process serving within "
        f"{frozen_worker.SERVING_WITHIN_S:g} s, no request longer than the timeout and "
        f"{frozen_worker.SLACK_S:g} s, no 500, none dropped.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| /health 503 after SIGSTOP | {_seconds(frozen.unhealthy_after_s)} |",
        f"| A new inference process serving, after SIGSTOP | {_seconds(frozen.serving_after_s)} "
        f"(process {frozen.old_pid} frozen, then {frozen.new_pid or 'none'}) |",
        f"| Requests | {frozen.requests}: {_statuses(frozen.statuses)} |",
        f"| Dropped | {frozen.dropped} |",
        f"| Slowest request | {frozen.max_latency_s:.1f} s |",
        f"| /health from SIGSTOP on | {_statuses(frozen.health)} (0: no answer within 2 s) |",
    ]
    slow = attacks.slowloris
    lines += [
        "",
        "## Slowloris",
        "",
        f"{slow.connections} connections each send a request line and then one header byte every "
        f"{slowloris.BYTE_EVERY_S:g} s, never finishing the head, while wrk posts 28x28 PNGs to /predict "
        f"at concurrency {slowloris.WRK_CONNECTIONS} for {slowloris.WRK_SECONDS:g} s (bench/slowloris.py), "
        f"bounded to {slowloris.BOUND_S:g} s. Pass: every slow connection closed by the server (its head "
        f"deadline is {HEAD_TIMEOUT_S:g} s), and wrk sees no error and a p99 under "
        f"{slowloris.WRK_P99_MS:.0f} ms.",
        "",
        "| Measure | Value |",
        "|---|---|",
        f"| Small requests before: requests/s, p50, p99 | {slow.quiet.rps:.0f}, {slow.quiet.p50_ms:.1f} ms, "
        f"{slow.quiet.p99_ms:.1f} ms |",
        f"| Small requests meanwhile: requests/s, p50, p99 | {slow.load.rps:.0f}, {slow.load.p50_ms:.1f} ms, "
        f"{slow.load.p99_ms:.1f} ms |",
        f"| Small requests' errors meanwhile | {slow.load.errors} |",
        f"| Every slow connection closed | {_after_stop(slow.all_closed_s)} |",
        f"| What the slow connections got | {', '.join(f'{n} x {a}' for a, n in slow.answers.items())} |",
        "",
    ]
    return lines
