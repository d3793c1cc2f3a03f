"""Property-based fuzzing of the OpenAPI schema: no generated input makes the server fail.

Schemathesis turns the app's own OpenAPI document into Hypothesis strategies of valid and
invalid requests for every operation and sends them through the ASGI app with the tiny
model injected. Any 5xx fails, as does a response that contradicts the documented schema
or status codes. POST /api/model is left out: it swaps the served model (its refusals are
tested in test_api.py), and a swap in progress answers 503 by design.

The strategies are driven with plain `@given` (schemathesis 4.32's pytest integration
fails under pytest 9.2); the operations are listed from an app built without a model,
which loads nothing.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel

# Small enough that each example takes milliseconds on the tiny model, large enough that
# generated texts reach the token limit.
MAX_TOKENS = 64
EXAMPLES = 20  # per operation and mode: about a minute for the whole file on two cores
SKIPPED = {("POST", "/api/model")}


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid inputs; those that take any input also with invalid ones."""
    cases = []
    for path, item in create_app(Settings()).openapi()["paths"].items():
        for method, spec in item.items():
            if (method.upper(), path) in SKIPPED:
                continue
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if spec.get("parameters") or spec.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


@pytest.fixture(scope="module")
def fuzzed_app(tiny: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    settings = Settings(max_tokens=MAX_TOKENS, max_body_bytes=256 * 1024, runs_dir=tmp_path_factory.mktemp("runs"))
    app = create_app(settings, model=tiny)
    with TestClient(app):  # runs the lifespan: the mask store and the job runner open there
        yield app


@pytest.mark.parametrize(("method", "path", "mode"), _cases(), ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_no_generated_input_makes_the_server_fail(fuzzed_app: FastAPI, method: str, path: str, mode: GenerationMode) -> None:
    operation = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def check(case) -> None:
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, status_code_conformance])

    check()
    assert fuzzed_app.state.service.status().ready  # nothing a request sends takes the model away
