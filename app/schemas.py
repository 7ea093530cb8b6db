"""Response bodies: each has a pydantic schema and an example, shown in /docs."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from app.prediction import Prediction, ScoredClass
from models.metadata import FASHION_MNIST_CLASSES

VERSION_EXAMPLE = "3f2a9c01d4e5"
MODEL_VERSION_HELP = (
    "the version that made it: its number in the model repository, or with a single checkpoint "
    "(FASHION_MODEL_PATH) the first 12 hex digits of the file's SHA-256"
)
CLASSES_EXAMPLE = list(FASHION_MNIST_CLASSES)


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class ClassScore(BaseModel):
    class_name: str
    class_index: int
    probability: float = Field(ge=0, le=1)

    model_config = _example({"class_name": "Ankle boot", "class_index": 9, "probability": 0.981})


class PreprocessingInfo(BaseModel):
    original_size: tuple[int, int] = Field(description="width and height of the upload, in pixels")
    inverted: bool = Field(description="whether the image was inverted to light-on-black")
    background: int | None = Field(
        default=None,
        description="the background's mean level (0-255, before inversion) that was taken away; "
        "absent for a 28x28 picture, which is taken as it is",
    )
    box: tuple[int, int, int, int] | None = Field(
        default=None,
        description="the item that was cut out and fitted into 28x28: left, top, right, bottom in "
        "the upload's pixels (upright); absent for a 28x28 picture, or when no item stands out",
    )

    model_config = _example(
        {"original_size": [300, 400], "inverted": True, "background": 236, "box": [74, 50, 226, 350]}
    )


PREDICTION_EXAMPLE: dict[str, Any] = {
    "class_name": "Ankle boot",
    "class_index": 9,
    "confidence": 0.981,
    "top_k": [
        {"class_name": "Ankle boot", "class_index": 9, "probability": 0.981},
        {"class_name": "Sneaker", "class_index": 7, "probability": 0.012},
        {"class_name": "Sandal", "class_index": 5, "probability": 0.004},
    ],
    "preprocessing": {"original_size": [28, 28], "inverted": False},
    "ood_score": -1.37,
    "out_of_distribution": False,
    "model_name": "fashion-mnist",
    "model_version": VERSION_EXAMPLE,
}
# A real 28x28 PNG (a boot-like shape), small enough to read in /docs.
INPUT_IMAGE_EXAMPLE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAMUlEQVR42mNgGGSAEc46AWNYwIW"
    "Y8OkclaRIkhE92JHDnhGLFFyaEasUVH4gvEIjAAC6+QQl6bqu0gAAAABJRU5ErkJggg=="
)


def png_data_url(image: Image.Image) -> str:
    """An image as a ``data:image/png;base64,...`` URL, which a browser shows as it is."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class PredictionResponse(BaseModel):
    """The most probable class of one image, the top k, and what preprocessing did."""

    class_name: str
    class_index: int
    confidence: float = Field(ge=0, le=1, description="probability of the predicted class")
    top_k: list[ClassScore]
    preprocessing: PreprocessingInfo
    ood_score: float | None = Field(
        None,
        description="how unlike the training images the picture is to the model (higher: less alike; "
        "absent when the model has no fitted score)",
    )
    out_of_distribution: bool | None = Field(
        None,
        description="true when ood_score is past the threshold: the picture does not look like any "
        "of the classes, whatever class_name says (absent when the model has no fitted score)",
    )
    model_name: str = Field(description="the model that made the prediction")
    model_version: str = Field(description=MODEL_VERSION_HELP)
    input_image: str | None = Field(
        None,
        description="with include_input=true only: the 28x28 grayscale the model saw, before "
        "normalisation, as a data:image/png;base64 URL",
    )

    model_config = _example({**PREDICTION_EXAMPLE, "input_image": INPUT_IMAGE_EXAMPLE})


def prediction_content(prediction: Prediction, model_name: str, model_version: str) -> dict[str, Any]:
    """A PredictionResponse as the JSON-ready dict it dumps to (``None`` fields left out), built
    directly: validating a model of it, then serialising that, costs the event loop on every answer."""

    def score(item: ScoredClass) -> dict[str, Any]:
        # Six decimals are plenty for a probability and keep the JSON readable.
        return {"class_name": item.name, "class_index": item.index, "probability": round(item.probability, 6)}

    best, steps = prediction.top[0], prediction.steps
    preprocessing: dict[str, Any] = {"original_size": steps.original_size, "inverted": steps.inverted}
    if steps.background is not None:
        preprocessing["background"] = int(steps.background)
    if steps.box is not None:
        preprocessing["box"] = [int(edge) for edge in steps.box]
    content: dict[str, Any] = {
        "class_name": best.name,
        "class_index": best.index,
        "confidence": round(best.probability, 6),
        "top_k": [score(item) for item in prediction.top],
        "preprocessing": preprocessing,
    }
    if prediction.ood_score is not None:
        content["ood_score"] = round(prediction.ood_score, 4)
    if prediction.out_of_distribution is not None:
        content["out_of_distribution"] = prediction.out_of_distribution
    content["model_name"] = model_name
    content["model_version"] = model_version
    if prediction.input_image is not None:
        content["input_image"] = png_data_url(prediction.input_image)
    return content


class BatchPredictionResponse(BaseModel):
    predictions: list[PredictionResponse] = Field(description="one per file, in upload order")

    model_config = _example({"predictions": [PREDICTION_EXAMPLE]})


class ClassesResponse(BaseModel):
    classes: list[str] = Field(description="class names in index order")

    model_config = _example({"classes": CLASSES_EXAMPLE})


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model_name: str = Field(description="the default model, which /predict serves")
    model_version: str = Field(description="its newest ready version, which /predict uses")
    device: str
    uptime_s: float = Field(description="seconds since the service started")

    model_config = _example(
        {
            "status": "ok",
            "model_name": "fashion-mnist",
            "model_version": VERSION_EXAMPLE,
            "device": "cpu",
            "uptime_s": 42.7,
        }
    )


class HealthProblem(BaseModel):
    status: Literal["loading", "error"]
    detail: str | None = None

    model_config = _example({"status": "loading", "detail": None})


class LivenessResponse(BaseModel):
    status: Literal["alive"]

    model_config = _example({"status": "alive"})


class InputInfo(BaseModel):
    height: int
    width: int
    channels: int
    mean: list[float] = Field(description="normalisation: (pixel / 255 - mean) / std")
    std: list[float]


class OODInfo(BaseModel):
    method: str = Field(description="how ood_score is computed")
    threshold: float = Field(description="ood_score above which a prediction is flagged out_of_distribution")
    validation_flag_rate: float = Field(
        description="share of the model's validation images its own threshold flags"
    )


MODEL_INFO_EXAMPLE: dict[str, Any] = {
    "model_name": "fashion-mnist",
    "model_version": VERSION_EXAMPLE,
    "version": VERSION_EXAMPLE,
    "sha256": VERSION_EXAMPLE + "0" * 52,
    "arch": "cnn",
    "model_args": {"num_classes": 10},
    "num_parameters": 235_834,
    "classes": CLASSES_EXAMPLE,
    "input": {"height": 28, "width": 28, "channels": 1, "mean": [0.286], "std": [0.353]},
    "metrics": {"test_accuracy": 0.9312, "test_loss": 0.2011, "train_seconds": 1412.5},
    "train_args": {"arch": "cnn", "epochs": 30, "lr": 0.1, "data_dir": "fashion-mnist"},
    "created_at": "2026-11-27T01:30:00+00:00",
    "format_version": 1,
    "flip_average": True,
    "temperature": 0.618,
    "ood": {"method": "mahalanobis+energy", "threshold": 3.24, "validation_flag_rate": 0.03},
    "device": "cpu",
    "runtime": "openvino",
}


class ModelInfoResponse(BaseModel):
    """What the checkpoint says about itself, and the name and version it is served as."""

    model_name: str = Field(description="the model's name (on the V2 routes too)")
    model_version: str = Field(description=MODEL_VERSION_HELP)
    version: str = Field(description="first 12 hex digits of the model file's SHA-256")
    sha256: str
    arch: str
    model_args: dict[str, Any]
    num_parameters: int
    classes: list[str]
    input: InputInfo
    metrics: dict[str, Any] = Field(description="figures recorded by training (test accuracy, ...)")
    train_args: dict[str, Any] = Field(description="the training command's arguments; paths shortened")
    created_at: str | None = Field(description="when training wrote the file (UTC)")
    format_version: int | None = Field(description="checkpoint layout version; null for a bare state dict")
    flip_average: bool = Field(
        description="whether each image is predicted as the mean of it and its mirror image, as the "
        "checkpoint asks unless FASHION_FLIP_AVERAGE overrides it"
    )
    temperature: float = Field(
        description="the logits are divided by it before the softmax (1: the checkpoint is not calibrated)"
    )
    ood: OODInfo | None = Field(description="the out-of-distribution score; null when the model has none")
    device: str
    runtime: str = Field(
        description="what runs the network: torch, openvino or onnxruntime (FASHION_RUNTIME)"
    )

    model_config = _example(MODEL_INFO_EXAMPLE)


class ModelVersions(BaseModel):
    name: str
    versions: list[ModelInfoResponse] = Field(description="the loaded versions, oldest first")


class ModelListResponse(BaseModel):
    """Every model served, each version with its metadata."""

    default_model: str = Field(description="the model /predict, the page and /model serve")
    models: list[ModelVersions]

    model_config = _example(
        {
            "default_model": "fashion-mnist",
            "models": [{"name": "fashion-mnist", "versions": [MODEL_INFO_EXAMPLE]}],
        }
    )


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer: a short message the client can act on."""

    detail: str

    model_config = _example({"detail": "the file is not a decodable image"})
