"""The serving benchmark's Markdown report: medians over rounds, the goals, the context."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.serving import Round

OURS, NAIVE, LITSERVE, CEILING = "ours", "naive", "LitServe", "ceiling"
LOGS_TEXT, LOGS_JSON, TRACED = "ours text logs", "ours JSON logs", "ours JSON logs traced"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[Round]) -> dict[int, dict[str, float]]:
    """Per concurrency: the median of each figure over the rounds; errors are summed."""
    table: dict[int, dict[str, float]] = {}
    for connections in rounds[0].runs:
        runs = [r.runs[connections] for r in rounds if connections in r.runs]
        table[connections] = {
            "rps": _median([m.load.rps for m in runs]),
            "p50": _median([m.load.p50_ms for m in runs]),
            "p95": _median([m.load.p95_ms for m in runs]),
            "p99": _median([m.load.p99_ms for m in runs]),
            "errors": sum(m.load.errors for m in runs),
            "requests": sum(m.load.requests for m in runs),
            "server_cpu": _median([100 * m.server_cpu_s / m.load.seconds for m in runs]),
            "wrk_cpu": _median([100 * m.load.generator_cpu_s / m.load.seconds for m in runs]),
        }
    return table


def _goals(
    tables: dict[str, dict[int, dict[str, float]]],
    ours: str,
    budget_rps: float | None,
    memory: dict[str, float],
) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for each goal of the service that this run can check."""
    goals: list[tuple[str, str, bool]] = []
    mine = tables.get(ours, {})

    def ratio(goal: str, a: float, b: float, target: float, at_most: bool = False) -> None:
        value = a / b
        met = value <= target if at_most else value >= target
        goals.append((goal, f"{value:.2f}x ({a:.1f} / {b:.1f})", met))

    top = max(mine, default=0)
    for other, target in ((NAIVE, 2.0), (LITSERVE, 2.5), (CEILING, 0.55)):
        if top in mine and top in tables.get(other, {}):
            goal = f"requests/s at concurrency {top} >= {target}x {other}'s"
            ratio(goal, mine[top]["rps"], tables[other][top]["rps"], target)
    if top in mine and budget_rps:
        goal = f"requests/s at concurrency {top} >= 80% of what the CPU budget below allows"
        ratio(goal, mine[top]["rps"], budget_rps, 0.8)
    if top in mine:
        ratio(f"p99 <= 2x p50 at concurrency {top} (ms)", mine[top]["p99"], mine[top]["p50"], 2.0, True)
    if 1 in mine and 1 in tables.get(NAIVE, {}):
        ratio("p50 at concurrency 1 <= 0.8x naive's (ms)", mine[1]["p50"], tables[NAIVE][1]["p50"], 0.8, True)
    if ours in memory and NAIVE in memory:
        ratio("PSS after the requests below <= 1.2x naive's (MiB)", memory[ours], memory[NAIVE], 1.2, True)
    return goals


V2_IMAGE, V2_PIXELS = "ours V2 image", "ours V2 pixels"


def _v2_goals(tables: dict[str, dict[int, dict[str, float]]]) -> list[tuple[str, str, bool]]:
    """The Open Inference Protocol routes against /predict, the same service in the same run."""
    mine = tables.get(OURS, {})
    top = max(mine, default=0)
    goals = []
    for name, target, word in ((V2_IMAGE, 0.9, ">= 0.9x"), (V2_PIXELS, 1.0, "> 1x")):
        if top in mine and top in tables.get(name, {}):
            a, b = tables[name][top]["rps"], mine[top]["rps"]
            met = a / b >= target if target < 1 else a / b > target
            goal = f"{name.removeprefix('ours ')} requests/s at concurrency {top} {word} /predict's"
            goals.append((goal, f"{a / b:.2f}x ({a:.1f} / {b:.1f})", met))
    return goals


def _ab(
    ours: dict[int, dict[str, float]], base: dict[int, dict[str, float]], name: str, title: str = ""
) -> list[str]:
    """The service against its own earlier revision, or another setting, measured in the same run."""
    lines = [
        "",
        f"## A/B: {title or f'ours against {name}'}",
        "",
        "| concurrency | requests/s ratio | p50 ratio | p99 ratio |",
    ]
    lines.append("|---:|---:|---:|---:|")
    for c in sorted(set(ours) & set(base)):
        a, b = ours[c], base[c]
        lines.append(
            f"| {c} | {a['rps'] / b['rps']:.3f}x | {a['p50'] / b['p50']:.3f}x | {a['p99'] / b['p99']:.3f}x |"
        )
    return lines


def _saturation(ceiling: dict[int, dict[str, float]]) -> list[str]:
    """Whether wrk, rather than the ceiling server, was the limit."""
    rows = ", ".join(f"{row['rps']:.0f}" for row in ceiling.values())
    top = ceiling[max(ceiling)]
    return [
        "",
        "## Does the load generator saturate the ceiling server?",
        "",
        f"The ceiling server answered {rows} requests/s at concurrency "
        f"{', '.join(map(str, ceiling))}. At concurrency {max(ceiling)} its one process used "
        f"{top['server_cpu']:.0f}% of a core (one uvicorn worker cannot use more than one core) while "
        f"wrk used {top['wrk_cpu']:.0f}%: "
        + (
            "the server, not the generator, was the limit."
            if top["server_cpu"] >= 90 and top["wrk_cpu"] < 90
            else "**the server was not saturated; the generator or the machine was the limit**."
        ),
    ]


HEADER = """\
# Serving benchmarks

Written by `python -m bench.serving` on {date} ({minutes} min of benchmarking); every
figure below is from that one run. Raw figures: `{json}`.

## Machine

- {cpu}, {cores} cores, {memory_gib} GiB of memory; {platform}
- Python {python}, torch {torch}, OpenVINO {openvino}, ONNX Runtime {onnxruntime}, FastAPI {fastapi},
  Starlette {starlette},
  uvicorn {uvicorn} ({loop} event loop, {http} HTTP parser, for every server alike),
  LitServe {litserve}, Pillow {pillow}, python-multipart {multipart}
- Load generator: {wrk}, one thread, in its own process; load average when the run
  ended: {load}

## Method

- Every server is a subprocess on 127.0.0.1 serving `{model}`:
  - **ours**: `python -m app.serve` (one uvicorn worker) with the default settings
    (batches of up to 32 images, 2 ms wait, queue of 1,024, the worker polling 2 ms after
    each answer, one thread, the network run by {runtime}: `FASHION_RUNTIME=auto`'s choice);
    **ours --workers 2**: the same with two worker processes. `FASHION_LOG_LEVEL=warning`
    turns off the per-request access log, which no other server here writes either.
    **ours text logs** and **ours JSON logs**: the same with the access log on
    (`FASHION_LOG_LEVEL=info`), as text and as JSON (`FASHION_LOG_FORMAT`), into a file;
    **ours JSON logs traced**: JSON logs and traces (`FASHION_OTEL_ENDPOINT`), sent to
    `bench/otlp_sink.py` in the benchmark's process, which accepts each export and drops it.
    **ours V2 image** and **ours V2 pixels**: the same service driven through the Open
    Inference Protocol, `POST /v2/models/fashion-mnist/infer`, as Triton's client sends it:
    a JSON header, then the tensor as binary data: the PNG file as a `BYTES` element
    (`image`), or its 28x28 pixels as `UINT8` (`pixels`, no decoding); outputs
    `class_name` and `probabilities`, as JSON.
  - **naive**: `bench/naive_server.py`, the FastAPI tutorial's way: a sync endpoint, one
    forward pass per request, no batching, torch's default threads (one per core). It
    loads the model through `app.predictor` (batch norm folded, warmed up, run by eager
    PyTorch) and preprocesses the same way.
  - **LitServe**: `bench/litserve_server.py`, the same model and preprocessing as a
    `LitAPI` with `max_batch_size=32` and `batch_timeout=0.002`: one API server process
    and one inference worker process, which decodes, batches and runs the model with eager
    PyTorch on one thread.
  - **ceiling**: `bench/ceiling_server.py` reads the same multipart upload and answers a
    constant of the same shape: the cost of HTTP alone on one uvicorn worker.
- Load: wrk (`bench/post_images.lua`) posts multipart uploads on keep-alive
  connections, rotating {n_images} real Fashion-MNIST test images (28x28 PNGs), at
  concurrency {concurrency}, for {duration:g} s each after {warmup:g} s of warm-up.
- {rounds} rounds; each round restarts every server. Figures are medians over the rounds;
  errors (connection errors, timeouts, non-2xx answers) are summed over them. CPU is the
  share of one core used during the measurement: by all the server's processes, and by
  wrk. The machine has {cores} cores in all.
"""


def write_report(
    path: Path,
    machine: dict[str, Any],
    rounds: dict[str, list[Round]],
    offline: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    tables = {name: summarise(runs) for name, runs in rounds.items()}
    v = machine["versions"]
    header = HEADER.format(
        date=machine["date"],
        minutes=machine["benchmark_minutes"],
        json=args.json,
        cpu=machine["cpu"],
        cores=machine["cores"],
        memory_gib=machine["memory_gib"],
        platform=machine["platform"],
        python=machine["python"],
        torch=v["torch"],
        openvino=v.get("openvino", "absent"),
        onnxruntime=v.get("onnxruntime", "absent"),
        runtime=offline.get("served_runtime", "torch"),
        fastapi=v["fastapi"],
        starlette=v["starlette"],
        uvicorn=v["uvicorn"],
        loop=machine["uvicorn_loop"],
        http=machine["uvicorn_http"],
        litserve=v["litserve"],
        pillow=v["pillow"],
        multipart=v["python-multipart"],
        wrk=machine["wrk"],
        load=", ".join(map(str, machine["load_average_at_end"])),
        model=args.model,
        n_images=args.n_images,
        concurrency=", ".join(map(str, args.concurrency)),
        duration=args.duration,
        warmup=args.warmup,
        rounds=args.rounds,
    )
    lines = [
        header.rstrip("\n"),
        "",
        f"## Throughput and latency (median of {args.rounds} rounds)",
        "",
        "| server | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors | server CPU | wrk CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, table in tables.items():
        for c, row in table.items():
            cells = [
                name,
                str(c),
                f"{row['rps']:.1f}",
                *(f"{row[p]:.2f}" for p in ("p50", "p95", "p99")),
                f"{row['errors']:.0f} of {row['requests']:,.0f}",
                f"{row['server_cpu']:.0f}%",
                f"{row['wrk_cpu']:.0f}%",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    memory = {name: runs[0].memory_mib[0] for name, runs in rounds.items() if runs[0].memory_mib}
    for ours in (OURS, "ours --workers 2"):
        if ours in tables:
            budget = _budget(tables.get(ours, {}), tables.get(CEILING, {}), offline, machine["cores"])
            lines += ["", f"## Goals: {ours}", "", "| goal | measured | met |", "|---|---|---|"]
            for goal, measured, met in _goals(tables, ours, budget[3] if budget else None, memory):
                lines.append(f"| {goal} | {measured} | {'yes' if met else '**no**'} |")
    if v2 := _v2_goals(tables):
        lines += ["", "## Goals: the Open Inference Protocol (V2) routes", "", "| goal | measured | met |"]
        lines.append("|---|---|---|")
        lines += [f"| {goal} | {measured} | {'yes' if met else '**no**'} |" for goal, measured, met in v2]
    for name in tables:
        if " @ " in name and OURS in tables:
            lines += _ab(tables[OURS], tables[name], name)
    for name, base in ((LOGS_JSON, LOGS_TEXT), (TRACED, LOGS_JSON), (LOGS_TEXT, OURS)):
        if name in tables and base in tables:
            lines += _ab(tables[name], tables[base], base, title=f"{name} against {base}")
    if CEILING in tables:
        lines += _saturation(tables[CEILING])
    lines += _offline_section(offline)
    if OURS in tables and CEILING in tables:
        lines += _cpu_budget(tables[OURS], tables[CEILING], offline, machine["cores"])
    lines += [
        "",
        "## Start-up and memory",
        "",
        f"Start-up: from spawning the process to the first 200 from `/health` (median of {args.rounds}).",
        f"Memory: after at least {args.memory_requests:,} requests (5-second runs at concurrency 16 until",
        "the count is passed) at the start of round 1, summed over the server's processes. PSS",
        "splits pages shared by several processes (torch's libraries) between them; RSS counts",
        "them in each.",
        "",
        "| server | start-up s | requests | PSS MiB | RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in rounds.items():
        pss, rss = runs[0].memory_mib or (float("nan"), float("nan"))
        startup = _median([r.startup_s for r in runs])
        lines.append(f"| {name} | {startup:.2f} | {runs[0].memory_requests:,} | {pss:.0f} | {rss:.0f} |")
    path.write_text("\n".join(lines) + "\n" + _kept_notes(path))


NOTES_MARKER = "<!-- Hand-written notes below: bench.serving keeps them when it rewrites this file. -->"


def _kept_notes(path: Path) -> str:
    """The hand-written part of an existing report, from the marker on."""
    old = path.read_text() if path.exists() else ""
    return "\n" + old[old.index(NOTES_MARKER) :] if NOTES_MARKER in old else ""


def _offline_section(offline: dict[str, Any]) -> list[str]:
    one = offline["threads_1"]
    ceiling = one["matmul_gflops"] * 1e9 / offline["flops"]  # images/s at matmul speed
    best = max(one["images_per_s"].values())
    flip = offline.get("flip_average", False)
    served = offline.get("served_runtime", "torch")
    what = "batch norm and temperature folded" + (", each image averaged with its mirror" if flip else "")
    per_image = " (two forward images: the image and its mirror)" if flip else ""
    lines = [
        "",
        f"## Offline inference (the served graph: {what}, calibrated softmax, out-of-distribution score)",
        "",
        f"{offline['macs'] / 1e6:.1f}M multiply-adds, so {offline['flops'] / 1e6:.1f} MFLOPs per image"
        f"{per_image}.",
        f"One core multiplied 1024x1024 matrices at {one['matmul_gflops']:.0f} GFLOP/s in this run,",
        f"which puts this model at {1e3 / ceiling:.2f} ms of one core per image ({ceiling:,.0f} images/s).",
        f"The runtime the server picks ({served}) reaches {best:,.0f} images/s on one thread,",
        f"{best / ceiling:.0%} of that"
        + (
            ": small 28x28 feature maps use the vector units less well than a big matrix product."
            if best <= ceiling
            else "; over 100%: the matrix product was timed at a slower moment of this noisy machine."
        ),
        "Each runtime, on the whole graph the server runs, measured in this run:",
        "",
        "| runtime | threads | batch 1 img/s | batch 32 img/s | batch 256 img/s | batch 32 ms per image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for runtime, figures in offline.get("runtimes", {}).items():
        if "error" in figures:
            lines.append(f"| {runtime} | - | {figures['error']} | | | |")
            continue
        for key, speeds in figures.items():
            ips = speeds["images_per_s"]
            label = f"{runtime} (served)" if runtime == served else runtime
            cells = f"{ips[1]:,.0f} | {ips[32]:,.0f} | {ips[256]:,.0f} | {1e3 / ips[32]:.3f}"
            lines.append(f"| {label} | {key.removeprefix('threads_')} | {cells} |")
    return lines


def _budget(
    ours: dict[int, dict[str, float]],
    ceiling: dict[int, dict[str, float]],
    offline: dict[str, Any],
    cores: int,
) -> tuple[float, float, float, float] | None:
    """At the top concurrency both ran: CPU ms per request for HTTP and multipart (the
    ceiling's), for the load generator, for the served model, and the requests/s ``cores``
    allow a server that spends nothing beyond those."""
    top = max(set(ours) & set(ceiling), default=None)
    if top is None:
        return None
    http = ceiling[top]["server_cpu"] / 100 / ceiling[top]["rps"] * 1e3
    load = ceiling[top]["wrk_cpu"] / 100 / ceiling[top]["rps"] * 1e3
    model = 1e3 / offline["threads_1"]["images_per_s"][32]
    return http, load, model, cores * 1e3 / (http + model + load)


def _cpu_budget(
    ours: dict[int, dict[str, float]],
    ceiling: dict[int, dict[str, float]],
    offline: dict[str, Any],
    cores: int,
) -> list[str]:
    """How fast any server of this model could go here: CPU per request against the machine's cores."""
    budget = _budget(ours, ceiling, offline, cores)
    if budget is None:
        return []
    http, load, model, bound = budget
    top = max(set(ours) & set(ceiling))
    share = bound / ceiling[top]["rps"]
    mine = ours[top]
    spent = mine["server_cpu"] / 100 / mine["rps"] * 1e3
    runtime = offline.get("served_runtime", "torch")
    return [
        "",
        f"## CPU per request, and what {cores} cores allow",
        "",
        f"At concurrency {top}, from the figures above: the ceiling spends {http:.2f} ms of CPU per",
        f"request on HTTP and multipart parsing, wrk {load:.2f} ms to send it, and the served model",
        f"takes {model:.2f} ms of one core per image ({runtime}, one thread, batch 32, above). A server that",
        f"spent nothing beyond those would need {http + model + load:.2f} ms of CPU per request, so {cores}",
        f"cores could answer at most {bound:,.0f} requests/s: **{share:.0%} of the ceiling**.",
        f"Ours spent {spent:.2f} ms per request in its processes ({mine['server_cpu']:.0f}% of a core at",
        f"{mine['rps']:,.1f} requests/s): {mine['rps'] / bound:.0%} of what the budget allows.",
    ]
