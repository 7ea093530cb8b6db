"""Fuzzing: schemathesis generates requests from the app's own OpenAPI document and checks
every answer: no 5xx, only documented status codes and content types, bodies and headers
that match their schemas, invalid input refused, unknown methods answered 405.

Each operation gets up to EXAMPLES generated requests plus schemathesis's coverage cases
(boundary values, missing fields, wrong types), derandomized so every run sends the same
ones. The app runs in-process with its real lifespan (schemathesis starts it and ends it
with each test) on a tiny checkpoint, once without and once with an API key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import schemathesis.checks
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from app.main import create_app
from app.settings import Settings
from bench.fuzz import CHECKS, with_file_samples

EXAMPLES = 30
# The document /openapi.json serves; building the app loads nothing.
SCHEMA = schemathesis.openapi.from_dict(with_file_samples(create_app().openapi()))
CHECK_FUNCTIONS = [getattr(schemathesis.checks, name) for name in CHECKS]


@pytest.fixture(params=[None, "fuzz-key"], ids=["open", "api-key"])
def fuzz_app(request: pytest.FixtureRequest, tiny_checkpoint: Path) -> FastAPI:
    """With a key, the protected routes answer 401 to every generated request: that must be documented too."""
    return create_app(Settings(model_path=tiny_checkpoint, device="cpu", api_key=request.param))


@pytest.fixture
def sent() -> Iterator[list[int]]:
    """The status of every request the test sent: at least one, or the test proved nothing."""
    statuses: list[int] = []
    yield statuses
    assert statuses, "schemathesis generated no request for this operation"


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # One app serves all of an operation's examples: the function-scoped fixture is meant.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_generated_request_gets_a_documented_answer(
    case: schemathesis.Case, fuzz_app: FastAPI, sent: list[int]
) -> None:
    response = case.call_and_validate(app=fuzz_app, checks=CHECK_FUNCTIONS)
    sent.append(response.status_code)
