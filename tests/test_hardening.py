"""Issue 15's probes on the tiny model: no request takes the server down, holds the model
for long, or leaves a lasting 500.

Each test replays one row of the issue's table through the real app (TestClient, or raw
ASGI where a client must vanish or a body must never be read); sizes that only matter on
the real model are in test_hardening_real.py. Limits are set low in the settings so a
refusal shows without large inputs. Counts are checked against dense boolean tensors
filled slice by slice.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Iterator

import anyio
import pytest
import torch
from fastapi.testclient import TestClient

import app.api.routes.intervene as intervene_routes
import app.api.routes.masks as masks_routes
from app.api.main import create_app
from app.api.settings import Settings
from outlier_core.errors import InputError
from outlier_core.load.models import LoadedModel
from outlier_core.load.token_limits import first_tokens, longer_than
from outlier_core.select import coordinates as coordinates_module
from outlier_core.select import masks as masks_module
from outlier_core.select.mask_files import from_json
from outlier_core.select.mask_rules import dims_count, extended
from outlier_core.select.masks import FORMAT, SelectionMask, model_shapes
from tests.mask_reference import dense_reference

EMBED = "model.embed_tokens.weight"  # (260, 64)
Q = "model.layers.1.self_attn.q_proj.weight"  # (64, 64)
NORM = "model.layers.0.input_layernorm.weight"  # (64,)
TEXT = "Tiny models still have residual streams."


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def serve(model: LoadedModel, runs_dir: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(runs_dir=runs_dir, max_tokens=64, **settings), model=model))


@pytest.fixture()
def client(tiny: LoadedModel, runs_dir: Path) -> Iterator[TestClient]:
    with serve(tiny, runs_dir) as test_client:
        yield test_client


def safetensors_with(manifest: dict, tensors: dict[str, tuple[list[int], bytes]]) -> bytes:
    """A safetensors buffer written by hand: any declared shape, int64 data as given."""
    header: dict = {"__metadata__": {"format": FORMAT, "manifest": json.dumps(manifest)}}
    offset, data = 0, b""
    for name, (shape, raw) in tensors.items():
        header[name] = {"dtype": "I64", "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset, data = offset + len(raw), data + raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def manifest_of(shape: list[int], parameter: str = EMBED, name: str = "probe", n_params: int = 164_672) -> dict:
    return {"format": FORMAT, "name": name, "model": {"name": "tiny-random", "n_params": n_params}, "layout": "",
            "parameters": {parameter: {"shape": shape}}, "parts": [{"parameter": parameter, "kind": "columns", "source": "probe", "size": 1}]}


def upload(client: TestClient, data: bytes, name: str | None = None):
    return client.post("/api/masks/import", files={"file": ("mask", data)}, data={"name": name} if name else None)


# --- a mask's size, from its parts ---------------------------------------------


def test_counts_and_coordinates_agree_with_dense_references_and_list_each_coordinate_once(tiny: LoadedModel) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes, _ = model_shapes(tiny)
    for trial in range(20):
        mask = SelectionMask.empty(tiny, f"trial {trial}")
        for parameter in (Q, NORM, EMBED):
            shape = shapes[parameter]
            for kind in ("entries", "rows", "columns") if len(shape) == 2 else ("entries",):
                n = int(torch.randint(0, 6, (1,), generator=generator))
                if kind == "entries":
                    index = torch.stack([torch.randint(0, s, (n,), generator=generator) for s in shape], dim=1)
                else:
                    index = torch.randint(0, shape[0 if kind == "rows" else 1], (n,), generator=generator)
                mask = mask.add(tiny, parameter, kind, torch.cat([index, index]), "random")  # every index twice
        reference = {name: d for name, d in dense_reference(mask).items() if d.any()}
        assert mask.counts() == {name: int(d.sum()) for name, d in reference.items()}
        for name, d in reference.items():
            assert torch.equal(mask.coordinates[name], torch.nonzero(d.flatten()).flatten())


def test_a_repeated_column_is_counted_once_without_listing_the_repeats(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = SelectionMask.empty(tiny, "repeats").add(tiny, EMBED, "columns", [0] * 5000, "click")
    monkeypatch.setattr(masks_module.MaskPart, "flat", lambda *a: pytest.fail("a count must not list coordinates"))
    assert mask.count == 260
    assert mask.coordinates[EMBED].numel() == 260


def test_the_dims_count_is_the_built_masks_count(tiny: LoadedModel) -> None:
    dims = [(layer, dim) for layer in range(4) for dim in (0, 5, 5, 63)] + [(2, 7)]
    built = extended(tiny, SelectionMask.empty(tiny, "dims"), dims=dims)
    assert dims_count(tiny, dims) == built.count == sum(int(d.sum()) for d in dense_reference(built).values())
    with pytest.raises(InputError) as refused:
        extended(tiny, SelectionMask.empty(tiny, "dims"), dims=dims, max_count=built.count - 1)
    assert refused.value.field == "dims"


def test_a_mask_with_a_repeated_column_is_created_at_once(client: TestClient) -> None:
    started = time.monotonic()
    response = client.post("/api/masks", json={"name": "repeats", "parts": [{"parameter": EMBED, "kind": "columns", "index": [0] * 5000}]})
    assert response.status_code == 201 and response.json()["count"] == 260
    assert time.monotonic() - started < 5


def test_masks_past_the_coordinate_limit_are_refused_before_anything_is_written(tiny: LoadedModel, runs_dir: Path) -> None:
    with serve(tiny, runs_dir, max_mask_coordinates=1000) as client:
        rows = client.post("/api/masks", json={"name": "embedding", "parts": [{"parameter": EMBED, "kind": "rows", "index": list(range(260))}]})
        assert rows.status_code == 422 and "at most 1,000" in rows.json()["detail"]
        dims = client.post("/api/masks", json={"name": "dims", "dims": [{"layer": i % 4, "dim": i % 64} for i in range(10_000)]})
        assert dims.status_code == 422 and dims.json()["field"] == "dims"
        suggest = client.post("/api/masks/suggest", json={"budget": 1001, "text": TEXT})
        assert suggest.status_code == 422 and suggest.json()["field"] == "budget"
        assert client.get("/api/masks").json()["masks"] == []
        assert list((runs_dir / "masks").iterdir()) == []


def test_suggest_honours_the_servers_token_limit(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    capture = masks_routes.suggest_mask
    monkeypatch.setattr(masks_routes, "suggest_mask", lambda model, prompt, *a: (seen.append(prompt.ids.shape[1]), capture(model, prompt, *a))[1])
    response = client.post("/api/masks/suggest", json={"budget": 100, "text": TEXT * 50, "max_tokens": 4096})
    assert response.status_code == 201 and seen == [64]


# --- imports: checked before anything is computed or written -------------------


@pytest.mark.parametrize("shape", [[1, 2**30], [1, 2**33], [2**63, 1], [2**64, 2**64], [0, 5], [1] * 20])
def test_an_absurd_declared_shape_is_refused_at_once(client: TestClient, shape: list[int]) -> None:
    twin = safetensors_with(manifest_of(shape), {"parts.0": ([1], struct.pack("<q", 0))})
    started = time.monotonic()
    for data in (twin, json.dumps({**manifest_of(shape), "parts": [{"parameter": EMBED, "kind": "columns", "index": [0], "source": "probe"}]}).encode()):
        response = upload(client, data)
        assert response.status_code == 422, response.text
    assert time.monotonic() - started < 5
    assert client.get("/api/masks").json() == {"masks": [], "unreadable": []}


def test_names_that_cannot_be_read_back_are_never_stored(client: TestClient) -> None:
    lone = json.dumps({**manifest_of([260, 64], name="a\ud800"), "parts": []}).encode()  # ensure_ascii: the escape \ud800
    assert upload(client, lone).status_code == 422
    twin = safetensors_with(manifest_of([260, 64], name="a\ud800"), {"parts.0": ([1], struct.pack("<q", 0))})
    assert upload(client, twin).status_code == 422
    response = client.post("/api/masks", json={"name": "x" * 201, "parts": []})
    assert response.status_code == 422
    assert client.get("/api/masks").json() == {"masks": [], "unreadable": []}


@pytest.mark.parametrize("depth", [900, 2000, 100_000])
def test_deeply_nested_manifests_are_refused(client: TestClient, depth: int) -> None:
    nested = "[" * depth + "0" + "]" * depth
    data = json.dumps({**manifest_of([260, 64]), "parts": [{"parameter": EMBED, "kind": "columns", "source": "s", "index": "X"}]})
    response = upload(client, data.replace('"X"', nested).encode())
    assert response.status_code == 422 and response.json()["field"] in ("file", "mask.parts[0].index")
    twin = safetensors_with(manifest_of([260, 64]), {"parts.0": ([1], struct.pack("<q", 0))})
    length = struct.unpack("<Q", twin[:8])[0]
    header = json.loads(twin[8 : 8 + length])
    header["__metadata__"]["manifest"] = data.replace('"X"', nested)
    text = json.dumps(header).encode()
    response = upload(client, struct.pack("<Q", len(text)) + text + twin[8 + length :])
    assert response.status_code == 422 and response.json()["field"].startswith("mask")
    assert client.get("/api/masks").json() == {"masks": [], "unreadable": []}


# --- the store: summaries, unreadable files, quotas, atomic files --------------


def test_an_unreadable_file_is_listed_apart_and_never_breaks_a_listing(tiny: LoadedModel, runs_dir: Path) -> None:
    with serve(tiny, runs_dir) as client:
        good = client.post("/api/masks", json={"name": "good", "dims": [{"layer": 1, "dim": 2}]}).json()
    folder = runs_dir / "masks"
    (folder / "20200101-000000-aaaaaa.safetensors").write_bytes(b"\x00" * 40)
    (folder / "20200101-000000-aaaaaa.json").write_text("{")
    lone = safetensors_with({**manifest_of([260, 64], name="a\ud800"), "parts": []}, {})  # stored by an older server
    (folder / "20200101-000000-bbbbbb.safetensors").write_bytes(lone)
    with serve(tiny, runs_dir) as client:
        listing = client.get("/api/masks")
        assert listing.status_code == 200
        assert [m["id"] for m in listing.json()["masks"]] == [good["id"]]
        assert [u["id"] for u in listing.json()["unreadable"]] == ["20200101-000000-bbbbbb", "20200101-000000-aaaaaa"]
        assert client.get("/api/masks/20200101-000000-bbbbbb").status_code == 409
        assert client.delete("/api/masks/20200101-000000-aaaaaa").status_code == 204
        assert not (folder / "20200101-000000-aaaaaa.json").exists()
        assert client.get("/api/masks/" + good["id"]).json()["count"] == good["count"]


def test_a_listing_after_a_restart_reads_headers_only(tiny: LoadedModel, runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(tiny, runs_dir) as client:
        for i in range(3):
            client.post("/api/masks", json={"name": f"m{i}", "parts": [{"parameter": EMBED, "kind": "columns", "index": [0] * 2000}]})
    monkeypatch.setattr(coordinates_module.Collapsed, "positions", lambda *a: pytest.fail("a listing must not list coordinates"))
    monkeypatch.setattr(masks_module.SelectionMask, "_collapsed", property(lambda self: pytest.fail("nor collapse parts")))
    with serve(tiny, runs_dir) as client:
        listed = client.get("/api/masks").json()["masks"]
        assert [m["count"] for m in listed] == [260, 260, 260] and all(p["index"] is None for m in listed for p in m["parts"])


def test_listings_run_off_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    store = client.app.state.masks
    listing = store.list
    monkeypatch.setattr(store, "list", lambda: (time.sleep(1.0), listing())[1])
    slow = threading.Thread(target=client.get, args=("/api/masks",))
    slow.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert client.get("/api/health").status_code == 200
    assert time.monotonic() - started < 0.5
    slow.join()


def test_stored_masks_are_read_from_disk_not_kept_in_memory(client: TestClient, runs_dir: Path) -> None:
    first = client.post("/api/masks", json={"name": "first", "dims": [{"layer": 0, "dim": 1}]}).json()
    client.post("/api/masks", json={"name": "second", "dims": [{"layer": 0, "dim": 2}]})
    (runs_dir / "masks" / f"{first['id']}.safetensors").unlink()
    response = client.get(f"/api/masks/{first['id']}")
    assert response.status_code == 409 and "cannot be read back" in response.json()["detail"]


def test_mask_count_and_disk_quotas(tiny: LoadedModel, runs_dir: Path) -> None:
    body = {"name": "q", "parts": [{"parameter": EMBED, "kind": "rows", "index": list(range(100))}]}
    with serve(tiny, runs_dir, max_masks=2) as client:
        assert [client.post("/api/masks", json=body).status_code for _ in range(3)] == [201, 201, 409]
    with serve(tiny, runs_dir / "other", max_mask_disk_bytes=2**20) as client:
        codes = [client.post("/api/masks", json=body).status_code for _ in range(10)]  # ~100 KiB each
        assert codes[0] == 201 and codes[-1] == 409
        assert sum(p.stat().st_size for p in (runs_dir / "other" / "masks").iterdir()) <= 2**20


def test_mask_files_are_written_atomically(tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.json"
    first = SelectionMask.empty(tiny, "first").add(tiny, Q, "rows", [1], "click")
    first.save(path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        first.add(tiny, Q, "rows", [2], "click").save(path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no half file, no temp file left


# --- evaluation: capped, windowed, stoppable --------------------------------------


def intervene_body(eval_chars: int) -> dict:
    return {"text": TEXT, "interventions": [{"layer": 1, "position": 1, "dim": 3}], "eval_text": "word " * (eval_chars // 5)}


def test_evaluation_text_is_capped_in_tokens(tiny: LoadedModel, runs_dir: Path) -> None:
    with serve(tiny, runs_dir, max_eval_tokens=500) as client:
        started = time.monotonic()
        response = client.post("/api/intervene", json=intervene_body(1_500_000))
        assert response.status_code == 422 and response.json()["field"] == "eval_text" and "500" in response.json()["detail"]
        assert time.monotonic() - started < 10
        assert client.post("/api/intervene", json=intervene_body(400)).status_code == 200


@pytest.fixture()
def slow_windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each window takes 0.1 s longer; the list holds the index of every window scored."""
    scored: list[int] = []
    score = intervene_routes.score_window

    def slow(model, evaluation, i, stop):
        time.sleep(0.1)
        result = score(model, evaluation, i, stop)
        scored.append(i)
        return result

    monkeypatch.setattr(intervene_routes, "score_window", slow)
    return scored


def test_short_requests_run_between_the_windows_of_a_long_evaluation(client: TestClient, slow_windows: list[int]) -> None:
    long = {}
    worker = threading.Thread(target=lambda: long.update(response=client.post("/api/intervene", json=intervene_body(1500))))
    worker.start()
    while not slow_windows:
        time.sleep(0.01)
    assert client.post("/api/scan", json={"text": TEXT}).status_code == 200
    assert len(slow_windows) < 10  # of ~24: the scan did not wait for the whole evaluation
    worker.join()
    assert long["response"].status_code == 200 and len(slow_windows) > 20


def test_a_request_past_its_time_limit_stops_at_the_next_window(tiny: LoadedModel, runs_dir: Path, slow_windows: list[int]) -> None:
    with serve(tiny, runs_dir, request_seconds=0.5) as client:
        response = client.post("/api/intervene", json=intervene_body(1500))
        assert response.status_code == 422 and response.json()["field"] == "eval_text" and "limit of 0.5 s" in response.json()["detail"]
        assert len(slow_windows) < 8


def test_a_request_whose_client_left_stops_at_the_next_window(tiny: LoadedModel, runs_dir: Path, slow_windows: list[int]) -> None:
    app = create_app(Settings(runs_dir=runs_dir, max_tokens=64), model=tiny)
    body = json.dumps(intervene_body(1500)).encode()
    gone = threading.Event()
    sent: list[dict] = []
    unread = [body]

    async def receive() -> dict:
        if unread:
            return {"type": "http.request", "body": unread.pop(), "more_body": False}
        if gone.is_set():
            return {"type": "http.disconnect"}
        await anyio.sleep_forever()

    async def send(message: dict) -> None:
        sent.append(message)

    async def leave_after_the_first_window() -> None:
        while not slow_windows:
            await anyio.sleep(0.01)
        gone.set()

    async def call() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/api/intervene", "raw_path": b"/api/intervene", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("test", 1), "server": ("test", 80)}
        async with anyio.create_task_group() as group:
            group.start_soon(leave_after_the_first_window)
            await app(scope, receive, send)

    anyio.run(call)
    assert sent[0]["status"] == 499
    assert len(slow_windows) <= 3  # of ~24


# --- fine-tunes: sized before they are queued --------------------------------------


def test_a_finetune_that_cannot_fit_is_refused_at_once(tiny: LoadedModel, runs_dir: Path) -> None:
    with serve(tiny, runs_dir, finetune_memory_share=1e-6) as client:
        mask = client.post("/api/masks", json={"name": "m", "dims": [{"layer": 1, "dim": 3}]}).json()
        started = time.monotonic()
        big = client.post("/api/finetune", json={"mask_id": mask["id"], "batch_size": 1024, "seq_len": 512, "lora_rank": 65536, "baselines": ["lora"]})
        assert big.status_code == 422 and big.json()["field"] in ("batch_size", "lora_rank") and "GiB" in big.json()["detail"]
        assert time.monotonic() - started < 10
        assert client.get("/api/jobs").json()["jobs"] == []
    with serve(tiny, runs_dir, max_train_tokens=2000) as client:
        text = client.post("/api/finetune", json={"mask_id": mask["id"], "data_text": "some words " * 100_000})
        assert text.status_code == 422 and text.json()["field"] == "data_text" and "2,000 tokens" in text.json()["detail"]
        assert client.get("/api/jobs").json()["jobs"] == []


def test_a_truncated_or_empty_result_answers_409(client: TestClient) -> None:
    runner = client.app.state.jobs
    for broken in (b"", b'{"config": {"ste'):
        job = runner.submit("finetune", lambda ctx: {"config": {"steps": 1}}, {})
        deadline = time.monotonic() + 30
        while runner.get(job.id).state != "done" and time.monotonic() < deadline:
            time.sleep(0.02)
        (runner.folder(job.id) / "result.json").write_bytes(broken)
        response = client.get(f"/api/jobs/{job.id}/result")
        assert response.status_code == 409 and "result.json" in response.json()["detail"]
    assert client.get("/api/jobs").status_code == 200


# --- which models may be loaded ----------------------------------------------------


def test_bad_model_names_get_one_422_that_tells_nothing_about_the_disk(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "a-folder").mkdir()
    details = set()
    for name in ("~nosuchuser", "~nosuchuser/model", "/etc/passwd", "/etc", "/no/such/path", str(tmp_path / "a-folder"), "../..", "a\x00b"):
        response = client.post("/api/model", json={"name": name})
        assert response.status_code == 422 and response.json()["field"] == "name", (name, response.text)
        details.add(response.json()["detail"])
    assert len(details) == 1 and "passwd" not in details.pop()
    health = client.get("/api/health").json()
    assert health["loading"] is None and health["error"] is None and health["ready"] is True


def test_local_folders_load_only_under_the_configured_model_directories(tiny: LoadedModel, runs_dir: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "models"
    (allowed / "empty").mkdir(parents=True)
    with serve(tiny, runs_dir, model_dirs=[allowed]) as client:
        assert client.post("/api/model", json={"name": str(allowed / ".." / "models" / ".." / "runs")}).status_code == 422
        assert client.post("/api/model", json={"name": str(allowed / "empty")}).status_code == 202
        deadline = time.monotonic() + 60
        while (health := client.get("/api/health").json())["loading"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health["ready"] and health["model"] == "tiny-random"  # the failed load kept the old model
        assert "not a model folder" in health["error"] and "config.json" not in health["error"]


# --- the API key ---------------------------------------------------------------------


def test_the_key_is_checked_before_the_body_is_read_and_guards_the_docs(tiny: LoadedModel, runs_dir: Path) -> None:
    with serve(tiny, runs_dir, api_key="s3cret", max_body_bytes=1024 * 1024) as client:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert client.get(path).status_code == 401
        malformed = client.post("/api/scan", content=b"{not json", headers={"content-type": "application/json"})
        assert malformed.status_code == 401
        huge = client.post("/api/masks/import", files={"file": ("m", b"0" * (2 * 1024 * 1024))})
        assert huge.status_code == 401  # not 413: the body was never read
        assert client.get("/api/health").status_code == 200
        assert client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).status_code == 200
    with serve(tiny, runs_dir, api_key="s3cret", open_docs=True) as client:
        assert client.get("/openapi.json").status_code == 200 and client.get("/api/models").status_code == 401


def test_a_request_without_the_key_never_reads_its_body(tiny: LoadedModel, runs_dir: Path) -> None:
    app = create_app(Settings(runs_dir=runs_dir, api_key="s3cret"), model=tiny)
    reads: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/masks/import", "raw_path": b"/api/masks/import", "query_string": b"", "root_path": "",
             "headers": [(b"content-length", str(15 * 2**20).encode())], "client": ("test", 1), "server": ("test", 80)}
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 401 and reads == []


def test_every_mask_that_is_stored_reads_back_as_it_was_listed(client: TestClient) -> None:
    made = client.post("/api/masks", json={"name": "ünïcode ✓", "parts": [{"parameter": Q, "kind": "entries", "index": [[1, 2], [1, 2]]}]}).json()
    exported = client.get(f"/api/masks/{made['id']}/export").json()
    assert from_json(exported).count == made["count"] == 1
    listed = client.get("/api/masks").json()["masks"][0]
    assert {k: v for k, v in listed.items() if k != "parts"} == {k: v for k, v in made.items() if k != "parts"}


def test_long_texts_are_cut_and_refused_from_a_prefix(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "The lighthouse keeper counted boats. " * 2000
    whole = tiny.tokenizer(text, add_special_tokens=False).input_ids
    for n in (1, 37, 500, len(whole), len(whole) + 5):
        assert first_tokens(tiny, text, n) == whole[:n]
        assert longer_than(tiny, text, n) == (len(whole) > n)
    tokenized: list[int] = []
    tokenizer = tiny.tokenizer
    monkeypatch.setattr(tiny, "tokenizer", lambda t, **kw: (tokenized.append(len(t)), tokenizer(t, **kw))[1])
    assert longer_than(tiny, text, 100) and max(tokenized) < len(text) // 10
