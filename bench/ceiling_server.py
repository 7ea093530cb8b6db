"""The ceiling: what HTTP and multipart parsing alone cost, with no model at all.

    python -m bench.ceiling_server --port 8003

It reads the same multipart upload as the real /predict and answers a constant of the
same shape, so no server that does real work on one uvicorn worker can go faster.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, File, UploadFile

ANSWER = {
    "class_name": "Ankle boot",
    "class_index": 9,
    "confidence": 0.98,
    "top_k": [
        {"class_name": "Ankle boot", "class_index": 9, "probability": 0.98},
        {"class_name": "Sneaker", "class_index": 7, "probability": 0.01},
        {"class_name": "Sandal", "class_index": 5, "probability": 0.005},
    ],
}


def create_app() -> FastAPI:
    app = FastAPI(title="ceiling")

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008
        """Read the upload, answer a constant."""
        await file.read()
        return ANSWER

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare endpoint: the cost of HTTP alone")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
