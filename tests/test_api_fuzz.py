"""Property-based fuzzing of the OpenAPI schema: no generated input makes the server fail.

Schemathesis turns the app's own OpenAPI document into Hypothesis strategies of valid and
invalid requests for every operation and sends them through the ASGI app with the tiny
model injected. Any 5xx fails, as does a response that contradicts the documented schema
or status codes. POST /api/model is left out: it swaps the served model (its refusals are
tested in test_api.py), and a swap in progress answers 503 by design.

The strategies are driven with plain `@given` (schemathesis 4.32's pytest integration
fails under pytest 9.2); the operations are listed from an app built without a model,
which loads nothing.

Two operations get more than the schema can give: the fine-tune route with the id of a
mask that exists (so the request reaches the model and the memory estimate; the run
process is replaced by one that returns at once), and the multipart mask import with
files drawn near the real format: manifests with odd names, shapes, indices and nesting,
and safetensors twins carrying them. Whatever an import is answered, every stored mask
must list and read back afterwards.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

import app.api.routes.jobs as jobs_routes
import app.api.routes.sweeps as sweeps_routes
from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.load.models import LoadedModel
from outlier_core.select.masks import FORMAT, KINDS, model_shapes

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
    with pytest.MonkeyPatch.context() as patch, TestClient(app):  # runs the lifespan: the mask store and the job runner open there
        # an accepted sweep records a driver that is already gone instead of starting one that trains
        patch.setattr(sweeps_routes, "launch_driver", lambda root, sid, options: SimpleNamespace(pid=None, create_time=lambda: None))
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


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
ALL_CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def stub_runs() -> Iterator[None]:
    """Accepted fine-tunes finish at once instead of starting a run process each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs_routes, "run_job", lambda run, options, files: lambda ctx: {})
        yield


def test_finetune_requests_for_a_real_mask_never_fail(fuzzed_app: FastAPI, stub_runs: None) -> None:
    client = TestClient(fuzzed_app)
    mask = client.post("/api/masks", json={"name": "fuzz", "dims": [{"layer": 1, "dim": 3}]})
    assert mask.status_code == 201, mask.text
    operation = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)["/api/finetune"]["POST"]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @FUZZ_SETTINGS
    def check(case) -> None:
        if isinstance(case.body, dict):
            case.body["mask_id"] = mask.json()["id"]
        case.call_and_validate(checks=ALL_CHECKS)

    check()
    assert fuzzed_app.state.service.status().ready


def _texts() -> st.SearchStrategy[str]:
    """Short strings of any code point, lone surrogates included (JSON escapes them)."""
    return st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


def _manifests(shapes: dict[str, tuple[int, ...]], n_params: int) -> st.SearchStrategy[dict]:
    names = st.sampled_from(sorted(shapes)) | _texts()
    shape = st.sampled_from(sorted(shapes.values())).map(list) | st.lists(st.integers(-2, 2**70), max_size=4)
    index = st.recursive(st.integers(-2, 2**64), lambda inner: st.lists(inner, max_size=4), max_leaves=16)
    part = st.fixed_dictionaries({"parameter": names, "kind": st.sampled_from(KINDS) | _texts(), "index": index, "source": _texts()})
    return st.fixed_dictionaries({
        "format": st.just(FORMAT) | _texts(),
        "name": _texts(),
        "model": st.fixed_dictionaries({"name": st.just("tiny-random") | _texts(), "n_params": st.just(n_params) | st.integers(-1, 2**70)}),
        "parameters": st.dictionaries(names, st.fixed_dictionaries({"shape": shape}), max_size=3),
        "parts": st.lists(part, max_size=3),
    })


def _mutations(valid: dict) -> st.SearchStrategy[dict]:
    """A real manifest with one field replaced: files that pass most checks and fail (or not) late."""
    parameter = next(iter(valid["parameters"]))
    places = [("name",), ("format",), ("model", "name"), ("model", "n_params"), ("parameters", parameter, "shape"),
              ("parts", 0, "index"), ("parts", 0, "kind"), ("parts", 0, "source"), ("parts", 0, "parameter")]
    values = st.none() | st.booleans() | st.integers(-2, 2**70) | _texts() | st.lists(st.integers(-2, 2**64), max_size=3)

    def replaced(place: tuple, value: object) -> dict:
        manifest = json.loads(json.dumps(valid))
        holder = manifest
        for key in place[:-1]:
            holder = holder[key]
        holder[place[-1]] = value
        return manifest

    return st.builds(replaced, st.sampled_from(places), values)


def _nested(depth: int) -> str:
    return "[" * depth + "0" + "]" * depth


def _as_file(manifest: dict, kind: str, exported: bytes) -> bytes:
    """The manifest as JSON, nested in an index thousands deep, or in the metadata of a real twin."""
    text = json.dumps(manifest)  # ensure_ascii: a lone surrogate travels as an escape
    if kind == "deep":
        return text.replace('"parts": [', f'"parts": [{{"parameter": "p", "kind": "rows", "source": "s", "index": {_nested(3000)}}}, ', 1).encode()
    if kind == "twin":
        length = int.from_bytes(exported[:8], "little")
        header = json.loads(exported[8 : 8 + length])
        header["__metadata__"]["manifest"] = text
        new = json.dumps(header).encode()
        return len(new).to_bytes(8, "little") + new + exported[8 + length :]
    return text.encode()


def test_no_imported_file_makes_the_server_fail_or_stores_what_cannot_be_read(fuzzed_app: FastAPI, tiny: LoadedModel) -> None:
    client = TestClient(fuzzed_app)
    shapes, n_params = model_shapes(tiny)
    made = client.post("/api/masks", json={"name": "twin", "parts": [{"parameter": "model.layers.0.input_layernorm.weight", "kind": "entries", "index": [[1]]}]})
    exported = client.get(f"/api/masks/{made.json()['id']}/export", params={"format": "safetensors"}).content
    valid = client.get(f"/api/masks/{made.json()['id']}/export", params={"format": "json"}).json()

    manifests = _manifests(shapes, n_params) | _mutations(valid) | st.just(valid)
    kinds = st.sampled_from(["json", "twin", "json", "twin", "deep"])

    @given(manifest=manifests, kind=kinds, name=st.none() | st.text(min_size=1, max_size=20))
    @settings(FUZZ_SETTINGS, max_examples=3 * EXAMPLES)
    def check(manifest: dict, kind: str, name: str | None) -> None:
        data = {"name": name} if name is not None else None
        response = client.post("/api/masks/import", files={"file": ("mask", _as_file(manifest, kind, exported))}, data=data)
        assert response.status_code in (201, 409, 413, 422), response.text
        listing = client.get("/api/masks")
        assert listing.status_code == 200 and listing.json()["unreadable"] == []
        for stored in listing.json()["masks"][:3]:
            assert client.get(f"/api/masks/{stored['id']}").status_code == 200

    check()
