"""The baseline: a classifier served the way the FastAPI tutorial would write it.

    python -m bench.naive_server --port 8001 --model models/model.pth

One request, one forward pass, in a sync endpoint (FastAPI runs it in its thread pool);
no batching. It runs the same model (loaded, fused and warmed up by app.predictor, so only
the serving differs) and the same preprocessing as the real service.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, File, UploadFile

from app.predictor import Predictor


def create_app(model_path: str) -> FastAPI:
    app = FastAPI(title="naive classifier")
    predictor = Predictor.load(model_path, device="cpu")

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (the tutorial's spelling)
        """Classify one image."""
        prediction = predictor.classify(file.file.read(), top_k=3)
        best = prediction.top[0]
        return {
            "class_name": best.name,
            "class_index": best.index,
            "confidence": best.probability,
            "top_k": [
                {"class_name": s.name, "class_index": s.index, "probability": s.probability}
                for s in prediction.top
            ],
        }

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The tutorial-style baseline server")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default="models/model.pth")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
