"""The same model behind LitServe, with the same batching limits as ours.

    python -m bench.litserve_server --port 8002 --model models/model.pth

LitServe decodes each request in its inference worker process, batches up to
``max_batch_size`` requests or ``batch_timeout`` seconds, and runs one forward pass per
batch: the steps map one to one onto app.predictor's preprocess, predict and postprocess.
"""

from __future__ import annotations

import argparse

import litserve as ls
import torch

from app.predictor import Predictor

MAX_BATCH_SIZE = 32  # ours: FASHION_MAX_BATCH_SIZE's default
BATCH_TIMEOUT_S = 0.002  # ours: FASHION_MAX_BATCH_WAIT_MS's default


class FashionAPI(ls.LitAPI):
    def __init__(self, model_path: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.model_path = model_path

    def setup(self, device: str) -> None:
        # One thread, as app.serve runs the model (FASHION_TORCH_THREADS' default): torch's
        # default of one per core made LitServe's worker several times slower on 2 cores.
        torch.set_num_threads(1)
        self.predictor = Predictor.load(self.model_path, device="cpu")

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # a multipart form
        # uint8 pixels, normalised once per batch in predict(): the same split as ours.
        return self.predictor.decode(request["file"].file.read()).tensor

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor.predict(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output.unbind(0))

    def encode_response(self, output: torch.Tensor) -> dict:
        top = self.predictor.postprocess(output, 3)
        return {
            "class_name": top[0].name,
            "class_index": top[0].index,
            "confidence": top[0].probability,
            "top_k": [
                {"class_name": s.name, "class_index": s.index, "probability": s.probability} for s in top
            ],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="The model behind LitServe, batching like ours")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--model", default="models/model.pth")
    args = parser.parse_args()
    server = ls.LitServer(FashionAPI(args.model), accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        port=args.port, host="127.0.0.1", num_api_servers=1, log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
