"""The model behind the API, as plain Python: load, preprocess, predict, postprocess.

The request path is named steps, so the inference worker (app/inference) can batch between them::

    decode(bytes) -> ModelInput              decode one upload to 28x28 uint8 pixels
    predict(N x 1 x 28 x 28) -> N x classes  normalise and run a whole batch in one forward pass
    postprocess(probs, top_k) -> [ScoredClass]

``preprocess`` is ``decode`` plus normalisation, for one item at a time. The worker calls
``decode`` and leaves normalisation to ``predict``: one vectorised operation per batch
instead of four small tensor operations per image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.card import ModelCard, OODCard
from app.inference.messages import WorkerConfig
from app.inference.served_model import Exported
from app.logs import configure_logging
from app.prediction import DeviceError, ItemError, Prediction, ScoredClass
from app.runtime import ExportedRunner, RuntimeName, TorchRunner, probe_batch, select_runner
from models.checkpoint import LoadedModel, load_checkpoint
from models.errors import CheckpointError, first_line
from models.export import ServingGraph
from models.images import DEFAULT_MAX_PIXELS, INPUT_SIZE, ImageError, InvertMode, decode_upload
from models.networks import prepare_for_inference
from models.ood import METHOD as OOD_METHOD
from models.preprocessing import Preprocessed, normalize, pixels_to_tensor, standardize


@dataclass(frozen=True)
class ModelInput(Preprocessed):
    """A network input and, when asked for, the 28x28 grayscale it was made from.

    ``tensor`` is 1x28x28: normalised float32 from ``preprocess``, or the raw uint8 pixels
    from ``decode``, which ``predict_batch`` normalises.
    """

    image: Image.Image | None = None


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; an explicit GPU must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


class Predictor:
    """A loaded, warmed-up classifier. Thread-safe: inference only reads the weights."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: torch.device,
        max_image_pixels: int,
        flip_average: bool | None = None,
        ood_threshold: float | None = None,
        runtime: RuntimeName = "torch",
    ) -> None:
        # load_checkpoint has checked the input is the 1x28x28 the shared preprocessing makes.
        self.loaded = loaded
        self.device = device
        self.max_image_pixels = max_image_pixels
        self.classes = list(loaded.classes)
        # Counted before fusing, which changes the count but not what the network learned.
        self.num_parameters = loaded.num_parameters
        # The checkpoint says whether its metrics were measured averaging each image with
        # its mirror; an operator may override it (half the compute, less accuracy).
        self.flip_average = loaded.flip_average if flip_average is None else flip_average
        self.calibration = loaded.calibration
        self.ood = loaded.ood
        # The checkpoint's threshold flags a fixed share of its validation images; an operator
        # may trade flags for misses.
        self.ood_threshold: float | None = None
        if self.ood is not None:
            self.ood_threshold = self.ood.threshold if ood_threshold is None else ood_threshold
        # Eval mode, batch norm folded into the convs, channels-last weights: the same
        # function as trained, about twice the throughput on the CPU.
        self.model = prepare_for_inference(loaded.model, self.calibration.temperature).to(device)
        self.graph = ServingGraph(self.model, self.flip_average, self.ood, self.calibration.temperature)
        probe = self.normalize(probe_batch(INPUT_SIZE)).to(device)
        self.runner = select_runner(runtime, self.graph, device, probe)
        self._warm_up()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str = "auto",
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        flip_average: bool | None = None,
        ood_threshold: float | None = None,
        runtime: RuntimeName = "torch",
    ) -> Predictor:
        """Load a checkpoint (weights_only), move it to the device, eval, fuse, pick the
        runtime (app.runtime), warm up.

        ``flip_average`` and ``ood_threshold`` None follow the checkpoint.
        """
        loaded = load_checkpoint(Path(path))
        return cls(loaded, resolve_device(device), max_image_pixels, flip_average, ood_threshold, runtime)

    @classmethod
    def from_config(cls, config: WorkerConfig) -> Predictor:
        """The checkpoint a worker serves, loaded as ``load`` does with the worker's settings."""
        return cls.load(
            config.model_path,
            config.device,
            config.max_image_pixels,
            config.flip_average,
            config.ood_threshold,
            config.runtime,
        )

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def runtime(self) -> str:
        """What runs the network: torch, openvino or onnxruntime."""
        return self.runner.name

    def card(self) -> ModelCard:
        """What the server shows of this version: the checkpoint's metadata, as served."""
        loaded = self.loaded
        ood = None
        if self.ood is not None and self.ood_threshold is not None:
            ood = OODCard(OOD_METHOD, self.ood_threshold, self.ood.flag_rate)
        return ModelCard(
            version=loaded.version,
            sha256=loaded.sha256,
            arch=loaded.arch,
            model_args=loaded.model_args,
            num_parameters=self.num_parameters,
            classes=tuple(self.classes),
            input=loaded.input_spec,
            metrics=loaded.metrics,
            train_args=loaded.train_args,
            created_at=loaded.created_at,
            format_version=loaded.format_version,
            flip_average=self.flip_average,
            temperature=self.calibration.temperature,
            ood=ood,
            device=str(self.device),
            runtime=self.runtime,
        )

    def _warm_up(self) -> None:
        # The first call pays for lazy initialisation (kernels, allocator); do it before
        # serving. (load_checkpoint's probe has checked the outputs against the classes.)
        try:
            self.predict(torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE))
        except RuntimeError as exc:
            detail = f"warm-up inference failed ({first_line(exc)})"
            raise CheckpointError(f"{self.loaded.path}: {detail}") from None

    def decode(
        self,
        data: bytes,
        invert: InvertMode = "auto",
        keep_image: bool = False,
        check: Callable[[Image.Image], None] | None = None,
    ) -> ModelInput:
        """Uploaded bytes to 1x28x28 uint8 pixels, not yet normalised; raises an ImageError subclass.

        ``check`` sees the opened header before any pixel is decoded, and may raise to stop there.
        """
        model_image, steps = decode_upload(data, invert, self.max_image_pixels, check)
        pixels = pixels_to_tensor(model_image).unsqueeze(0)
        kept = model_image if keep_image else None
        return ModelInput(tensor=pixels, steps=steps, image=kept)

    def preprocess(self, data: bytes, invert: InvertMode = "auto", keep_image: bool = False) -> ModelInput:
        """Uploaded bytes to a normalised 1x28x28 tensor; raises an ImageError subclass."""
        item = self.decode(data, invert, keep_image)
        return replace(item, tensor=self.normalize(item.tensor))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels to the network's input, with the statistics the model was trained with."""
        spec = self.loaded.input_spec
        return normalize(pixels, spec.mean, spec.std)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """float32 pixels in 0-1 to the network's input, in place."""
        spec = self.loaded.input_spec
        return standardize(x, spec.mean, spec.std)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 1 x 28 x 28 inputs (normalised, or uint8 pixels) to N x classes probabilities, on the CPU."""
        return self.predict_scored(batch)[0]

    def predict_scored(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Calibrated N x classes probabilities and N out-of-distribution scores (None without
        a fitted score), in one pass of the runtime, on the CPU."""
        if batch.dtype == torch.uint8:
            batch = self.normalize(batch)
        return self.runner(batch.to(self.device, non_blocking=True))

    def is_out_of_distribution(self, score: float | None) -> bool | None:
        """Whether a score is past the threshold; None without a fitted score."""
        return None if score is None or self.ood_threshold is None else score > self.ood_threshold

    def predict_batch(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-item probabilities for 1x28x28 tensors (all uint8 pixels, or all normalised), in one pass."""
        if not tensors:
            return []
        return list(self.predict(torch.stack(list(tensors))).unbind(0))

    def postprocess(self, probs: torch.Tensor, top_k: int) -> list[ScoredClass]:
        """The ``top_k`` most probable classes, best first."""
        values, indices = probs.topk(min(top_k, len(self.classes)))
        return [
            ScoredClass(index=i, name=self.classes[i], probability=float(p))
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def classify(
        self, data: bytes, top_k: int = 3, invert: InvertMode = "auto", keep_image: bool = False
    ) -> Prediction:
        """One upload, end to end; raises an ImageError subclass for a bad one."""
        return self._predict_items([self.decode(data, invert, keep_image)], top_k)[0]

    def classify_many(
        self, payloads: Sequence[bytes], top_k: int = 3, invert: InvertMode = "auto"
    ) -> list[Prediction]:
        """Several uploads, in order; the first bad one raises ItemError naming its index."""
        items = []
        for index, data in enumerate(payloads):
            try:
                items.append(self.decode(data, invert))
            except ImageError as exc:
                raise ItemError(index, exc) from exc
        return self._predict_items(items, top_k)

    def _predict_items(self, items: Sequence[ModelInput], top_k: int) -> list[Prediction]:
        probabilities, scores = self.predict_scored(torch.stack([item.tensor for item in items]))
        results = []
        for i, (item, probs) in enumerate(zip(items, probabilities, strict=True)):
            score = None if scores is None else float(scores[i])
            top = self.postprocess(probs, top_k)
            flagged = self.is_out_of_distribution(score)
            results.append(Prediction(top, item.steps, item.image, score, flagged))
        return results


class PredictorModel:
    """A loaded Predictor as a worker's ``ServedModel``: numpy pixels in, numpy answers out."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.card = predictor.card()

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = torch.from_numpy(pixels)
        if batch.is_floating_point():  # 0-1 floats a client sent; uint8 is normalised by predict
            batch = self.predictor.standardize(batch)
        probabilities, scores = self.predictor.predict_scored(batch)
        return probabilities.numpy(), None if scores is None else scores.numpy()


def export_for_worker(config: WorkerConfig) -> Exported | None:
    """Load and check the checkpoint a worker process will serve, as the worker would.

    With OpenVINO or ONNX Runtime chosen, the graph exported for the worker, which then imports no
    torch; None when the checkpoint is to be served with torch. Raises CheckpointError or
    DeviceError when it cannot serve. Run in a process of its own (app.repository.start).
    """
    configure_logging(config.log_level, config.log_format)
    predictor = Predictor.from_config(config)
    runner = predictor.runner
    if not isinstance(runner, ExportedRunner):
        return None
    probe = probe_batch(INPUT_SIZE)
    expected, expected_scores = TorchRunner(predictor.graph)(predictor.normalize(probe))
    return Exported(
        card=predictor.card(),
        runtime=runner.name,
        onnx=runner.model,
        outputs=runner.outputs,
        probe=probe.numpy(),
        probabilities=expected.numpy(),
        scores=None if expected_scores is None else expected_scores.numpy(),
    )
