"""Prometheus metrics: requests and latency per route, predictions per model, version and
class, the models served.

Each app has its own CollectorRegistry, so several apps in one process (tests) never
share or collide on counters. With ``--workers N`` each worker counts its own requests.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.card import ModelCard
from app.prediction import Prediction


class Metrics:
    """The service's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fashion_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fashion_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "fashion_predictions",
            "Images classified, by model, version and predicted class",
            ["model", "model_version", "class_name"],
            registry=self.registry,
        )
        self.out_of_distribution = Counter(
            "fashion_out_of_distribution_predictions",
            "Images classified whose out-of-distribution score was past the threshold, by model and version",
            ["model", "model_version"],
            registry=self.registry,
        )
        self.model = Info(
            "fashion_model",
            "The model versions being served, one series each",
            ["model", "model_version"],
            registry=self.registry,
        )
        # Dynamic batching (app/inference/batching.py): how full the forward passes are, and where time goes.
        self.batch_size = Histogram(
            "fashion_batch_size",
            "Images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "fashion_queue_wait_seconds",
            "Time an image waited, preprocessed, for its forward pass to start",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.inference_time = Histogram(
            "fashion_inference_seconds",
            "Duration of one forward pass, whatever its batch size",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.decode_time = Histogram(
            "fashion_decode_seconds",
            "Time to decode one upload to 28x28 pixels, by where: the inference worker (uploads of "
            "2 KiB or less) or a decoder process (the rest; from sending the upload to its answer)",
            ["where"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        for where in ("worker", "decoder"):
            self.decode_time.labels(where)  # both show, at 0, from the start
        self.queue_depth = Gauge(
            "fashion_queue_depth",
            "Images admitted and not yet answered (preprocessing, queued or in a forward pass)",
            registry=self.registry,
        )

    def set_model(self, name: str, version: str, card: ModelCard) -> None:
        accuracy = card.test_accuracy
        self.model.labels(name, version).info(
            {
                "version": card.version,
                "arch": card.arch,
                "parameters": str(card.num_parameters),
                "device": card.device,
                "test_accuracy": "" if accuracy is None else f"{accuracy:.4f}",
            }
        )
        for class_name in card.classes:
            self.predictions.labels(name, version, class_name)  # every class shows, at 0, from the start
        self.out_of_distribution.labels(name, version)

    def remove_model(self, name: str, version: str) -> None:
        """An unloaded version leaves the model series; its predictions' counts stay."""
        with contextlib.suppress(KeyError):
            self.model.remove(name, version)

    def count_predictions(self, predictions: Iterable[Prediction], name: str, version: str) -> None:
        for prediction in predictions:
            self.predictions.labels(name, version, prediction.top[0].name).inc()
            if prediction.out_of_distribution:
                self.out_of_distribution.labels(name, version).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template ("/predict"), never the raw path: bounded labels."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class MetricsMiddleware:
    """Count every HTTP request and time it, including those a later layer refuses."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = route_template(scope)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
