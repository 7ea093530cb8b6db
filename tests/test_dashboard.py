"""deploy/grafana-dashboard.json: every metric and label its queries use is one the service exports."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.app.images import png_bytes, product_photo
from tests.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
# A metric name, then optionally its {label matchers}.
_SELECTOR = re.compile(r"\b(fashion_[a-z_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby \(([^)]*)\)")


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exported(tiny_checkpoint: Any) -> dict[str, set[str]]:
    """Each sample name a live app exports, with the labels it carries, after some traffic."""
    settings = Settings(model_path=tiny_checkpoint, device="cpu")
    with TestClient(create_app(settings)) as client:
        client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
        client.post("/predict", files={"file": ("b.png", png_bytes(product_photo()), "image/png")})
        client.post("/predict", files={"file": ("c.png", b"", "image/png")})
        text = client.get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_every_metric_and_label_the_dashboard_queries_is_exported(tiny_checkpoint: Any) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    samples = exported(tiny_checkpoint)
    used = set()
    for expr in queries(dashboard):
        selectors = _SELECTOR.findall(expr)
        assert selectors, f"no metric of ours in {expr!r}"
        labels_here: set[str] = set()
        for name, matchers in selectors:
            assert name in samples, f"{name} (in {expr!r}) is not exported; exported: {sorted(samples)}"
            used.add(name)
            labels_here |= samples[name]
            for label in _MATCHER.findall(matchers):
                assert label in samples[name], f"{name} has no label {label!r} (in {expr!r})"
        for group in _BY.findall(expr):
            for label in (part.strip() for part in group.split(",")):
                assert label in labels_here, f"{label!r} is not a label of the metrics in {expr!r}"
    # The panels the dashboard promises, each on what the service measures.
    for name in (
        "fashion_http_requests_total",
        "fashion_http_request_duration_seconds_bucket",
        "fashion_batch_size_bucket",
        "fashion_queue_depth",
        "fashion_queue_wait_seconds_bucket",
        "fashion_decode_seconds_bucket",
        "fashion_inference_seconds_bucket",
        "fashion_predictions_total",
    ):
        assert name in used


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert all(target["refId"] for target in panel["targets"])
