"""Serving benchmark: our service against a naive server, LitServe and a bare ceiling.

    python -m bench.serving                      # writes docs/BENCHMARKS.md
    python -m bench.serving --duration 5 --rounds 1 --only ours ceiling

Every server runs as a subprocess on loopback with the same checkpoint, and wrk (its own
process, bench/load.py) posts real Fashion-MNIST test images to it at each concurrency.
Each round restarts every server, times it to a ready /health, warms it up, then measures
each concurrency for a fixed duration; the report gives the median of the rounds. Round 1
also sends 10,000 requests first and reads the servers' memory after them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.load import LoadResult, run_wrk, write_bodies, write_v2_bodies
from bench.machine import machine_info, offline_speed
from bench.otlp_sink import SinkServer
from bench.server_process import ServerProcess, free_port
from bench.serving_report import LOGS_JSON, LOGS_TEXT, TRACED, write_report


def server_commands(model: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name: (python arguments, extra environment). Ports are filled in at start.

    A name ``ours @ REF`` runs the service as it was at git revision REF (``--baseline``)."""
    # Access logs off, as no other server here writes one; the three "logs" entries measure
    # what the access line costs, as text and as JSON, and what tracing adds to it (spans
    # sent to bench/otlp_sink.py, which accepts and drops them).
    ours_env = {"FASHION_MODEL_PATH": model, "FASHION_LOG_LEVEL": "warning"}
    logged = {**ours_env, "FASHION_LOG_LEVEL": "info"}
    return {
        "ours": (["-m", "app.serve", "--port", "{port}"], ours_env),
        LOGS_TEXT: (["-m", "app.serve", "--port", "{port}"], {**logged, "FASHION_LOG_FORMAT": "text"}),
        LOGS_JSON: (["-m", "app.serve", "--port", "{port}"], {**logged, "FASHION_LOG_FORMAT": "json"}),
        TRACED: (
            ["-m", "app.serve", "--port", "{port}"],
            {**logged, "FASHION_LOG_FORMAT": "json", "FASHION_OTEL_ENDPOINT": "{otlp}"},
        ),
        "ours --workers 2": (["-m", "app.serve", "--port", "{port}", "--workers", "2"], ours_env),
        **{name: (["-m", "app.serve", "--port", "{port}"], ours_env) for name in TARGETS},
        "naive": (["-m", "bench.naive_server", "--port", "{port}", "--model", model], {}),
        "LitServe": (["-m", "bench.litserve_server", "--port", "{port}", "--model", model], {}),
        "ceiling": (["-m", "bench.ceiling_server", "--port", "{port}"], {}),
    }


# What each server is sent: the path, and the bodies (multipart uploads unless named here).
# The V2 entries are the same service as "ours", driven through the Open Inference Protocol.
V2_INFER = "/v2/models/fashion-mnist/infer"
TARGETS = {"ours V2 image": (V2_INFER, "image"), "ours V2 pixels": (V2_INFER, "pixels")}


@dataclass
class Measurement:
    load: LoadResult
    server_cpu_s: float  # CPU time of all the server's processes during the run


@dataclass
class Round:
    startup_s: float
    runs: dict[int, Measurement] = field(default_factory=dict)
    memory_mib: tuple[float, float] | None = None  # (PSS, RSS) after the first 10,000 requests
    memory_requests: int = 0


def real_pngs(data_dir: Path, n: int) -> list[bytes]:
    """The first ``n`` test images as 28x28 grayscale PNGs, extracted into a temporary cache."""
    import io

    from PIL import Image

    from training.data import load_fashion_mnist, prepare_fashion_mnist

    with tempfile.TemporaryDirectory() as cache:
        images, _ = load_fashion_mnist(prepare_fashion_mnist(data_dir, cache_dir=cache), train=False)
    pngs = []
    for image in images[:n]:
        buffer = io.BytesIO()
        Image.fromarray(image.numpy(), mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def measure_server(
    name: str,
    command: tuple[list[str], dict[str, str]],
    args: argparse.Namespace,
    all_bodies: dict[str, tuple[Path, str]],
    logs: Path,
    first_round: bool,
) -> Round:
    port = free_port()
    arguments = [part.format(port=port) for part in command[0]]
    # The baseline's own code comes first on its path: python -m imports from the working directory.
    cwd = logs / "baseline" if " @ " in name else None
    log = logs / f"{name.replace(' ', '_').replace('@', 'at')}.log"
    env = {key: value.format(otlp=args.otlp_endpoint) for key, value in command[1].items()}
    server = ServerProcess(name, arguments, port, log, env, cwd=cwd)
    path, kind = TARGETS.get(name, ("/predict", "multipart"))
    bodies, content_type = all_bodies[kind]
    url = f"http://127.0.0.1:{port}{path}"
    try:
        result = Round(startup_s=server.wait_ready())
        if first_round:
            # wrk runs for a time, not a count (a thread that stops early still waits out
            # the duration): short runs until the count is reached.
            while result.memory_requests < args.memory_requests:
                result.memory_requests += run_wrk(url, 16, 5, bodies, content_type).requests
            result.memory_mib = server.memory_mib()
        else:
            run_wrk(url, 16, args.warmup, bodies, content_type)
        for connections in args.concurrency:
            cpu_before = server.cpu_seconds()
            load = run_wrk(url, connections, args.duration, bodies, content_type)
            result.runs[connections] = Measurement(load, server.cpu_seconds() - cpu_before)
            print(
                f"  {name:>17} c={connections:<3} {load.rps:8.1f} req/s  p50 {load.p50_ms:7.2f} ms  "
                f"p99 {load.p99_ms:7.2f} ms  errors {load.errors}",
                flush=True,
            )
        return result
    finally:
        server.stop()


def checkout(revision: str, folder: Path) -> None:
    """The repository's files at ``revision``, in ``folder`` (git archive: no work tree touched)."""
    folder.mkdir()
    archive = subprocess.run(["git", "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark the service against naive, LitServe and ceiling servers",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="models/model.pth")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/fashion-mnist"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-images", type=int, default=16, help="real test images wrk rotates")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--only", nargs="+", help="run only these servers (names as in the report)")
    parser.add_argument(
        "--baseline", help="also run the service at this git revision (A/B in the same run), as 'ours @ REV'"
    )
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks-serving.json"))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    commands = server_commands(str(Path(args.model).resolve()))
    if args.baseline:
        commands[f"ours @ {args.baseline}"] = commands["ours"]
    names = [name for name in commands if not args.only or name in args.only or " @ " in name]
    started = time.time()
    rounds: dict[str, list[Round]] = {name: [] for name in names}
    sink = SinkServer()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    args.otlp_endpoint = sink.endpoint
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            checkout(args.baseline, Path(tmp) / "baseline")
        pngs = real_pngs(args.data_dir, args.n_images)
        uploads = Path(tmp) / "bodies"
        bodies = {"multipart": (uploads, write_bodies(pngs, uploads))}
        for _, kind in TARGETS.values():
            folder = Path(tmp) / f"bodies-{kind}"
            bodies[kind] = (folder, write_v2_bodies(pngs, folder, kind))
        for index in range(args.rounds):
            print(f"round {index + 1} of {args.rounds}", flush=True)
            for name in names:
                rounds[name].append(measure_server(name, commands[name], args, bodies, Path(tmp), index == 0))
    offline = offline_speed(args.model)
    machine = machine_info()
    machine["benchmark_minutes"] = round((time.time() - started) / 60, 1)
    args.json.write_text(
        json.dumps(
            {
                "machine": machine,
                "offline": offline,
                "args": {k: str(v) for k, v in vars(args).items()},
                "rounds": {name: [asdict(r) for r in runs] for name, runs in rounds.items()},
            },
            indent=1,
        )
    )
    write_report(args.output, machine, rounds, offline, args)
    print(f"wrote {args.output} and {args.json}")


if __name__ == "__main__":
    main()
