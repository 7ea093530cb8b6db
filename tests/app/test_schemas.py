"""The answers built as dicts are exactly what their documented response models dump."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic_core import to_json

from app.prediction import Prediction, ScoredClass
from app.schemas import BatchPredictionResponse, PredictionResponse, prediction_content
from models.images import Steps

TOP = [ScoredClass(9, "Ankle boot", 0.9947912), ScoredClass(7, "Sneaker", 0.000767123)]


@pytest.mark.parametrize(
    "prediction",
    [
        Prediction(TOP, Steps((28, 28), False), None, -1.39431, False),
        Prediction(TOP, Steps((300, 400), True, 236, (74, 50, 226, 350)), None, 7.25, True),
        Prediction(TOP, Steps((28, 28), False), Image.new("L", (28, 28), 30)),  # no score, the input kept
        Prediction(TOP[:1], Steps((640, 480), True, 201, None)),
    ],
)
def test_prediction_content_is_the_response_model_dumped_without_none(prediction: Prediction) -> None:
    content = prediction_content(prediction, "fashion-mnist", "3")
    model = PredictionResponse.model_validate(content)
    # Same keys, same order, same values: what response_model_exclude_none would have sent.
    assert to_json(content) == model.__pydantic_serializer__.to_json(model, exclude_none=True)
    assert content["confidence"] == round(prediction.top[0].probability, 6)
    if prediction.steps.box is None:
        assert "box" not in content["preprocessing"]
    if prediction.ood_score is None:
        assert "ood_score" not in content and "out_of_distribution" not in content
    batch = BatchPredictionResponse.model_validate({"predictions": [content, content]})
    assert batch.predictions[1] == model
