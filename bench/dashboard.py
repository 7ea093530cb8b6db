"""docs/dashboard.png: the Grafana dashboard's panels (deploy/grafana-dashboard.json), rendered
with matplotlib from /metrics scrapes of a live run, where Grafana itself cannot run.

    python -m bench.dashboard                  # about a minute; writes docs/dashboard.png

It serves the shipped model with ``fashion-serve``, has wrk post real Fashion-MNIST test PNGs
(with a few empty files, answered 400, and product photos, decoded by the decoder processes)
at concurrency 4, 32, 64 and 8, and scrapes /metrics every ``--every`` seconds meanwhile. Each
panel is its PromQL computed in Python over the scrapes: rate() over ``--window``, sum by the
same labels, histogram_quantile() interpolated within a bucket as Prometheus does.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.load import run_wrk, write_bodies
from bench.server_process import ServerProcess, free_port
from bench.serving import real_pngs

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]
PHASES = ((4, 10.0), (32, 10.0), (64, 15.0), (8, 10.0))  # (connections, seconds)
PREDICT = ("/predict", "/predict/batch", "/v2/models/{model_name}/infer")


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rate(before: Scrape, after: Scrape, seconds: float, name: str, by: tuple[str, ...], keep=None):  # type: ignore[no-untyped-def]
    """``sum by (by) (rate(name[window]))``, for the samples ``keep(labels)`` accepts."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in after.items():
        named = dict(labels)
        if sample != name or (keep and not keep(named)):
            continue
        key = tuple(named.get(label, "") for label in by)
        out[key] = out.get(key, 0.0) + (value - before.get((sample, labels), 0.0)) / seconds
    return out


def quantile(q: float, buckets: dict[float, float]) -> float:
    """histogram_quantile(): ``buckets`` maps each upper bound (le) to its cumulative rate."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-12)
        lower, below = bound, buckets[bound]
    return lower


def quantiles(before: Scrape, after: Scrape, seconds: float, name: str, by: tuple[str, ...] = (), keep=None):  # type: ignore[no-untyped-def]
    rates = rate(before, after, seconds, name + "_bucket", (*by, "le"), keep)
    groups: dict[tuple[str, ...], dict[float, float]] = {}
    for key, value in rates.items():
        groups.setdefault(key[:-1], {})[float(key[-1])] = value
    return {
        (*group, f"p{int(q * 100)}"): quantile(q, buckets)
        for group, buckets in groups.items()
        for q in (0.5, 0.95, 0.99)
    }


def product_photo() -> bytes:
    """A dark item on white, 300x400: more than the inference worker decodes itself."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (300, 400), 255)
    ImageDraw.Draw(image).rectangle((75, 50, 225, 350), fill=40)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def predicting(labels: dict[str, str]) -> bool:
    return labels.get("route") in PREDICT


def mean_batch(b: Scrape, a: Scrape, s: float) -> dict[tuple[str, ...], float]:
    total = rate(b, a, s, "fashion_batch_size_sum", ()).get((), 0.0)
    count = rate(b, a, s, "fashion_batch_size_count", ()).get((), 0.0)
    p95 = quantiles(b, a, s, "fashion_batch_size").get(("p95",), float("nan"))
    return {("mean",): total / count if count else float("nan"), ("p95",): p95}


def flagged_share(b: Scrape, a: Scrape, s: float) -> dict[tuple[str, ...], float]:
    flagged = rate(b, a, s, "fashion_out_of_distribution_predictions_total", ()).get((), 0.0)
    total = sum(rate(b, a, s, "fashion_predictions_total", ()).values())
    return {("flagged",): flagged / total if total else float("nan")}


def errors(labels: dict[str, str]) -> bool:
    return labels.get("status", "")[:1] in "45"


# Each panel's title (as in the dashboard) -> its query over two scrapes, and its unit.
PANELS: dict[str, tuple[Callable[[Scrape, Scrape, float], dict[tuple[str, ...], float]], str]] = {
    "Requests per second, by status": (
        lambda b, a, s: rate(b, a, s, "fashion_http_requests_total", ("status",)), "req/s"),
    "Errors per second, by route and status": (
        lambda b, a, s: rate(b, a, s, "fashion_http_requests_total", ("status", "route"), errors), "req/s"),
    "Prediction latency (p50, p95, p99)": (
        lambda b, a, s: quantiles(b, a, s, "fashion_http_request_duration_seconds", (), predicting), "s"),
    "Images per forward pass": (mean_batch, "images"),
    "Queue depth (images admitted, not answered)": (
        lambda b, a, s: {("images",): a.get(("fashion_queue_depth", frozenset()), 0.0)}, "images"),
    "Queue wait (p50, p95, p99)": (lambda b, a, s: quantiles(b, a, s, "fashion_queue_wait_seconds"), "s"),
    "Decode time per upload, by where (p50, p95, p99)": (
        lambda b, a, s: quantiles(b, a, s, "fashion_decode_seconds", ("where",)), "s"),
    "Forward pass time (p50, p95, p99)": (
        lambda b, a, s: quantiles(b, a, s, "fashion_inference_seconds"), "s"),
    "Predictions per second, by class": (
        lambda b, a, s: rate(b, a, s, "fashion_predictions_total", ("class_name",)), "images/s"),
    "Share of predictions flagged out of distribution": (flagged_share, "share"),
}  # fmt: skip


def run_load(
    url: str, bodies: Path, content_type: str, scrapes: list[tuple[float, Scrape]], every: float
) -> None:
    started = time.monotonic()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            scrapes.append((time.monotonic() - started, scrape(url)))
            done.wait(every)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(2 * every)  # idle first: the panels start from rest
        for connections, seconds in PHASES:
            print(f"  wrk c={connections} for {seconds:g} s", flush=True)
            run_wrk(url + "/predict", connections, seconds, bodies, content_type)
        time.sleep(3 * every)
    finally:
        done.set()
        poller.join()


def render(scrapes: list[tuple[float, Scrape]], window: int, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = [p["title"] for p in json.loads(Path("deploy/grafana-dashboard.json").read_text())["panels"]]
    shown = [title for title in titles if title in PANELS]
    fig, axes = plt.subplots((len(shown) + 1) // 2, 2, figsize=(14, 3.2 * ((len(shown) + 1) // 2)))
    for ax, title in zip(axes.flat, shown, strict=False):
        query, unit = PANELS[title]
        series: dict[tuple[str, ...], list[tuple[float, float]]] = {}
        for (t0, before), (t1, after) in zip(scrapes, scrapes[window:], strict=False):
            for key, value in query(before, after, t1 - t0).items():
                series.setdefault(key, []).append((t1, value))
        for key, points in sorted(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], label=" ".join(key) or "value")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=6, ncol=5 if len(series) > 5 else 1, loc="upper left")
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    fig.supxlabel("seconds into the run", fontsize=9)
    fig.suptitle("Fashion-MNIST classifier: deploy/grafana-dashboard.json's panels, from /metrics scrapes")
    fig.tight_layout()
    fig.savefig(output, dpi=80)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/model.pth")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/fashion-mnist"))
    parser.add_argument("--every", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--window", type=int, default=5, help="scrapes a rate() spans")
    parser.add_argument("--output", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args(argv)
    pngs = [*real_pngs(args.data_dir, 32), b"", product_photo()]
    scrapes: list[tuple[float, Scrape]] = []
    with tempfile.TemporaryDirectory() as tmp:
        content_type = write_bodies(pngs, Path(tmp) / "bodies")
        port = free_port()
        env = {"FASHION_MODEL_PATH": str(Path(args.model).resolve()), "FASHION_LOG_LEVEL": "warning"}
        server = ServerProcess("ours", ["-m", "app.serve", "--port", str(port)], port, Path(tmp) / "log", env)
        try:
            server.wait_ready()
            run_load(f"http://127.0.0.1:{port}", Path(tmp) / "bodies", content_type, scrapes, args.every)
        finally:
            server.stop()
    render(scrapes, args.window, args.output)
    print(f"wrote {args.output} from {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
