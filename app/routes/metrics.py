"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.auth import ApiKey
from app.dependencies import MetricsDep
from app.errors import error_responses

router = APIRouter(tags=["metrics"])

EXAMPLE = "\n".join(
    [
        "# HELP fashion_http_requests_total HTTP requests by method, route template and status code",
        "# TYPE fashion_http_requests_total counter",
        'fashion_http_requests_total{method="POST",route="/predict",status="200"} 12.0',
        "# HELP fashion_predictions_total Images classified, by model, version and predicted class",
        "# TYPE fashion_predictions_total counter",
        'fashion_predictions_total{class_name="Ankle boot",model="fashion-mnist",model_version="2"} 3.0',
        "# HELP fashion_model_info The model versions being served, one series each",
        "# TYPE fashion_model_info gauge",
        'fashion_model_info{arch="cnn",device="cpu",model="fashion-mnist",model_version="2",'
        'parameters="235834",test_accuracy="0.9312",version="3f2a9c01d4e5"} 1.0',
        "",
    ]
)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}, "example": EXAMPLE}},
        },
        **error_responses(401),
    },
    dependencies=[ApiKey],
)
async def read_metrics(metrics: MetricsDep) -> Response:
    """Request counts and latency per route, predictions per class, and the model's identity."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
