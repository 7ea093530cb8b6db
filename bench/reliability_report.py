"""docs/RELIABILITY.md from the results of bench/reliability.py, and the machine they came from."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.fuzz import FuzzResult
    from bench.reliability import BadUploadResult
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
