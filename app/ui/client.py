"""The one module of the UI that speaks HTTP: every API call, and every failure as a message.

A call returns the API's JSON (or the bytes of a download). Anything that goes wrong —
the API unreachable, slow, loading a model, refusing the input, failing — raises
`ApiProblem`, whose `message` is a sentence a user can act on; pages show it in place
of the view they could not draw.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import httpx

API_KEY_ENV = "OUTLIER_LAB_API_KEY"
CLIENT_HEADER = "X-Client-Id"
QUICK_TIMEOUT_S = 5.0  # health and small reads: the API answers them without touching the model
MODEL_TIMEOUT_S = 600.0  # a forward pass on a large model, or the first reference means on a busy CPU

HEATMAP_DIMS = 64  # columns of a layer heatmap: readable at a glance; the rest go in one "rest" column


class ApiProblem(Exception):
    """A failed API call. `kind`: unreachable | timeout | loading | auth | input | missing | server."""

    def __init__(self, kind: str, message: str, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.field = field


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase, None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"], body.get("field")
    return str(body)[:300], None


SIGN_IN_AGAIN = "Sign in again with the API's key (Sign out, top right)."


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None = None, http: httpx.Client | None = None, auth_hint: str | None = None):
        """`api_key`: None reads $OUTLIER_LAB_API_KEY; "" sends none. `auth_hint`: what a refused key should make the user do."""
        self.base_url = base_url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"X-API-Key": key} if key else {}
        self._auth_hint = auth_hint or f"Give the UI the API's key in ${API_KEY_ENV}."
        # `http` lets tests hand in a client bound to an in-process app (Starlette's TestClient).
        self._http = http or httpx.Client(base_url=self.base_url, timeout=MODEL_TIMEOUT_S)
        self._headers = headers
        self._vocab: dict | None = None

    def close(self) -> None:
        self._http.close()

    def with_key(self, key: str | None) -> ApiClient:
        """This client (the same connection pool) sending `key`, or no key."""
        twin = copy.copy(self)
        twin._headers = {"X-API-Key": key} if key else {}
        return twin

    def with_client_id(self, client_id: str) -> ApiClient:
        """This client naming itself `client_id` (X-Client-Id): the API's queue then says which of the
        waiting requests are its own, and lets it cancel its own evaluation."""
        twin = copy.copy(self)
        twin._headers = {**self._headers, CLIENT_HEADER: client_id}
        return twin

    def accepts_key(self) -> bool:
        """Whether the API takes this client's key. Raises ApiProblem when it cannot tell (unreachable, failing)."""
        try:
            self._call("GET", "/api/vocab", timeout=QUICK_TIMEOUT_S)
        except ApiProblem as problem:
            if problem.kind == "auth":
                return False
            raise
        return True

    def _call(self, method: str, path: str, *, json: Any = None, params: Any = None, files: Any = None, data: Any = None, timeout: float = MODEL_TIMEOUT_S, raw: bool = False) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params, files=files, data=data, headers=self._headers, timeout=timeout)
        except httpx.TimeoutException as err:
            raise ApiProblem("timeout", f"The API at {self.base_url} did not answer {path} within {timeout:.0f} s.") from err
        except httpx.TransportError as err:
            raise ApiProblem(
                "unreachable",
                f"Cannot reach the Outlier Lab API at {self.base_url} ({type(err).__name__}). "
                "Start it with `outlier-lab api`, or run `outlier-lab serve` for API and UI together.",
            ) from err
        if response.status_code >= 400:
            raise self._problem(response, path)
        if response.status_code == 204:
            return None
        if raw:
            return response.content
        try:
            return response.json()
        except ValueError as err:
            raise ApiProblem("server", f"The API answered {path} with something that is not JSON.", response.status_code) from err

    def _problem(self, response: httpx.Response, path: str) -> ApiProblem:
        detail, field = _detail(response)
        status = response.status_code
        if status == 401:
            return ApiProblem("auth", f"The API refused the request: {detail}. {self._auth_hint}", status, field)
        if status == 503:
            return ApiProblem("loading", f"The model is not ready: {detail}", status, field)
        if status in (404, 405) and field is None:
            return ApiProblem("missing", f"This API has no {path} route ({detail}); it may be older than the UI.", status)
        if status < 500:
            return ApiProblem("input", detail, status, field)
        return ApiProblem("server", f"The API failed on {path} (HTTP {status}): {detail}", status, field)

    # ---- model ----

    def health(self) -> dict:
        return self._call("GET", "/api/health", timeout=QUICK_TIMEOUT_S)

    def model(self) -> dict:
        return self._call("GET", "/api/model", timeout=QUICK_TIMEOUT_S)

    def models(self) -> dict:
        """The registry, and the model loaded or loading."""
        return self._call("GET", "/api/models", timeout=QUICK_TIMEOUT_S)

    def load_model(self, name: str, device: str | None = None, dtype: str | None = None) -> dict:
        """Start loading a model in the background; /api/health says when it serves."""
        return self._call("POST", "/api/model", json={"name": name, "device": device, "dtype": dtype}, timeout=QUICK_TIMEOUT_S * 6)

    def queue(self) -> dict:
        """Who holds the model, who waits (this client's place), how far the long requests are."""
        return self._call("GET", "/api/queue", timeout=QUICK_TIMEOUT_S)

    def cancel_work(self, work_id: str) -> dict:
        """Stop this client's own evaluation at its next window."""
        return self._call("POST", f"/api/queue/{work_id}/cancel", timeout=QUICK_TIMEOUT_S)

    def vocab(self) -> dict:
        """The API's sites, rules with their default thresholds, and tuning methods: the same for
        every user and every model, so this client asks once and keeps the answer."""
        if self._vocab is None:
            self._vocab = self._call("GET", "/api/vocab", timeout=QUICK_TIMEOUT_S)
        return self._vocab

    # ---- activations and attention ----

    def tokenize(self, text: str, prepend_bos: bool) -> dict:
        """The prompt's pieces, without a forward pass: which positions exist."""
        return self._call("POST", "/api/tokenize", json={"text": text, "prepend_bos": prepend_bos}, timeout=QUICK_TIMEOUT_S * 6)

    def scan(self, text: str, prepend_bos: bool, site: str = "resid_post", top_k: int = 3, rule: str | None = None) -> dict:
        """`rule`: a massive-activation rule of the vocabulary, sent as its thresholds; None leaves the API's default."""
        body = {"text": text, "prepend_bos": prepend_bos, "site": site, "top_k": top_k}
        if rule is not None:
            thresholds = self.vocab()["massive_rules"][rule]
            body |= {"abs_threshold": thresholds["abs_threshold"], "median_ratio": thresholds["median_ratio"]}
        return self._call("POST", "/api/scan", json=body)

    def activations(self, text: str, prepend_bos: bool, layer: int, site: str = "resid_post", view: str = "top", max_dims: int = HEATMAP_DIMS) -> dict:
        body = {"text": text, "prepend_bos": prepend_bos, "layer": layer, "site": site, "view": view, "max_dims": max_dims}
        return self._call("POST", "/api/activations", json=body)

    def attention(self, text: str, prepend_bos: bool, layer: int, heads: list[int] | None = None, mean_heads: bool = False, interventions: list[dict] | None = None) -> dict:
        """With `interventions`, the answer also holds `patterns_after` and `sink_share_after`."""
        body = {"text": text, "prepend_bos": prepend_bos, "layer": layer, "heads": heads, "mean_heads": mean_heads, "interventions": interventions or []}
        return self._call("POST", "/api/attention", json=body)

    def intervene(self, text: str, prepend_bos: bool, interventions: list[dict], eval_corpus: str | None = None) -> dict:
        body = {"text": text, "prepend_bos": prepend_bos, "interventions": interventions, "eval_corpus": eval_corpus}
        return self._call("POST", "/api/intervene", json=body)

    # ---- weights ----

    def weights(self, rule: str, k: float, kinds: tuple[str, ...] = ("norm",), layers: tuple[int, ...] | None = None) -> dict:
        params = {"rule": rule, "k": k, "kinds": list(kinds)}
        if layers is not None:
            params["layers"] = list(layers)
        return self._call("GET", "/api/weights", params=params)

    def tensor(self, name: str, rule: str, k: float, bins: int = 64, max_listed: int = 32) -> dict:
        return self._call("GET", f"/api/weights/{name}", params={"rule": rule, "k": k, "bins": bins, "max_listed": max_listed})

    def layer_weights(self, layer: int, rule: str, k: float, bins: int = 64, max_listed: int = 32) -> dict:
        """Every norm of one layer in full, and the names of its matrices."""
        return self._call("GET", f"/api/weights/layers/{layer}", params={"rule": rule, "k": k, "bins": bins, "max_listed": max_listed})

    def norms_at_dims(self, dims: list[int]) -> dict:
        return self._call("GET", "/api/weights/at-dims", params={"dims": dims})

    # ---- selection masks ----

    def masks(self) -> dict:
        return self._call("GET", "/api/masks", timeout=QUICK_TIMEOUT_S)

    def mask(self, mask_id: str) -> dict:
        return self._call("GET", f"/api/masks/{mask_id}")

    def create_mask(self, name: str, parts: list[dict] | None = None, dims: list[dict] | None = None) -> dict:
        return self._call("POST", "/api/masks", json={"name": name, "parts": parts or [], "dims": dims or []})

    def extend_mask(self, mask_id: str, parts: list[dict] | None = None, dims: list[dict] | None = None) -> dict:
        return self._call("POST", f"/api/masks/{mask_id}/parts", json={"parts": parts or [], "dims": dims or []})

    def suggest_mask(self, budget: int, text: str | None, prepend_bos: bool, rules: list[str], window: int, name: str) -> dict:
        """The norm-outlier rule is the API's default (the vocabulary's sigma and its k)."""
        body = {"budget": budget, "text": text, "prepend_bos": prepend_bos, "rules": rules, "window": window, "name": name}
        return self._call("POST", "/api/masks/suggest", json=body)

    def merge_masks(self, mask_ids: list[str], name: str) -> dict:
        """A new mask with the parts of every mask given; they stay as they were."""
        return self._call("POST", "/api/masks/merge", json={"ids": mask_ids, "name": name})

    def rename_mask(self, mask_id: str, name: str) -> dict:
        return self._call("PATCH", f"/api/masks/{mask_id}", json={"name": name})

    def remove_part(self, mask_id: str, part: int) -> dict:
        return self._call("DELETE", f"/api/masks/{mask_id}/parts/{part}")

    def delete_mask(self, mask_id: str) -> None:
        self._call("DELETE", f"/api/masks/{mask_id}")

    def export_mask(self, mask_id: str, file_format: str) -> bytes:
        return self._call("GET", f"/api/masks/{mask_id}/export", params={"format": file_format}, raw=True)

    def import_mask(self, filename: str, data: bytes) -> dict:
        return self._call("POST", "/api/masks/import", files={"file": (filename, data, "application/octet-stream")})

    # ---- fine-tune jobs ----

    def start_finetune(self, mask_id: str, baselines: list[str], steps: int, lr: float, data: str = "prose", data_text: str | None = None,
                       checkpoint: str = "auto", processes: int | None = None, shard: str | None = None) -> dict:
        body = {"mask_id": mask_id, "baselines": baselines, "steps": steps, "lr": lr, "data": data, "data_text": data_text, "checkpoint": checkpoint,
                "processes": processes, "shard": shard}
        return self._call("POST", "/api/finetune", json=body)

    def jobs(self) -> dict:
        return self._call("GET", "/api/jobs", timeout=QUICK_TIMEOUT_S)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}", timeout=QUICK_TIMEOUT_S)

    def job_result(self, job_id: str) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}/result")

    def cancel_job(self, job_id: str) -> dict:
        return self._call("POST", f"/api/jobs/{job_id}/cancel", timeout=QUICK_TIMEOUT_S)

    def runs(self) -> dict:
        return self._call("GET", "/api/runs")

    def upload_task_data(self, filename: str, data: bytes) -> dict:
        return self._call("POST", "/api/task-data", files={"file": (filename, data, "application/x-ndjson")})

    # ---- sweeps ----

    def start_sweep(self, body: dict) -> dict:
        return self._call("POST", "/api/sweeps", json=body)

    def sweeps(self) -> dict:
        return self._call("GET", "/api/sweeps", timeout=QUICK_TIMEOUT_S)

    def sweep(self, sweep_id: str) -> dict:
        return self._call("GET", f"/api/sweeps/{sweep_id}", timeout=QUICK_TIMEOUT_S)

    def cancel_sweep(self, sweep_id: str) -> dict:
        return self._call("POST", f"/api/sweeps/{sweep_id}/cancel", timeout=QUICK_TIMEOUT_S)

    def sweep_file(self, sweep_id: str, name: str) -> bytes:
        return self._call("GET", f"/api/sweeps/{sweep_id}/files/{name}", raw=True)

    # ---- the lab notebook ----

    def notebook_add(self, session: str, kind: str, title: str, inputs: dict, results: dict) -> dict:
        body = {"session": session, "kind": kind, "title": title, "inputs": inputs, "results": results}
        return self._call("POST", "/api/notebook", json=body, timeout=QUICK_TIMEOUT_S)

    def notebook(self, session: str) -> dict:
        return self._call("GET", "/api/notebook", params={"session": session}, timeout=QUICK_TIMEOUT_S)

    def notebook_export(self, session: str, file_format: str) -> bytes:
        return self._call("GET", "/api/notebook/export", params={"session": session, "format": file_format}, raw=True)

    def notebook_delete(self, session: str, entry_id: str) -> None:
        self._call("DELETE", f"/api/notebook/{entry_id}", params={"session": session}, timeout=QUICK_TIMEOUT_S)

    # ---- a run's deltas on the served model ----

    def apply_run(self, run_id: str, method: str) -> dict:
        return self._call("POST", "/api/model/deltas", json={"run": run_id, "method": method})

    def switch_deltas(self, enabled: bool) -> dict:
        return self._call("PATCH", "/api/model/deltas", json={"enabled": enabled})

    def merge_deltas(self) -> dict:
        return self._call("POST", "/api/model/deltas/merge")

    def detach_deltas(self) -> None:
        self._call("DELETE", "/api/model/deltas")
