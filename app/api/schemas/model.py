"""Health, the loaded model and the registry."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas.common import Request
from app.api.schemas.deltas import AppliedRunOut


class LoadProgressOut(BaseModel):
    stage: str = Field(description="reading weights, building the model, placing layers, moving to DEVICE or building the bridge, in that order")
    done: int | None = Field(default=None, description="units finished in this stage, where it counts them")
    total: int | None = Field(default=None, description="units in this stage, where known")
    unit: str = Field(default="", description="what done and total count (tensors)")
    text: str = Field(description="the same in words: 'reading weights: 120 of 272 tensors'")


class HealthOut(BaseModel):
    status: str = "ok"
    ready: bool = Field(description="true when a model serves requests")
    model: str | None = Field(description="the model serving requests")
    loading: str | None = Field(default=None, description="the model being loaded, if any")
    error: str | None = Field(default=None, description="why the last load failed, if it did")
    deltas: AppliedRunOut | None = Field(default=None, description="the fine-tune run whose deltas the served model carries, if any")
    progress: LoadProgressOut | None = Field(default=None, description="how far the load in progress has come")


class ModelOut(BaseModel):
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_params: int = Field(description="the base model's parameters (a run's deltas not counted)")
    device: str
    dtype: str
    norm_offset: float = Field(description="1.0 where norms scale by (1 + w), as Gemma's do")
    quantized_source: bool = Field(description="matrices dequantized from GGUF show the quantization grid")
    bos_token_id: int
    max_tokens: int = Field(description="the longest prompt this server accepts, BOS included")
    deltas: AppliedRunOut | None = Field(default=None, description="the fine-tune run whose deltas the model carries (POST /api/model/deltas), if any")


class RegistryEntryOut(BaseModel):
    name: str
    description: str
    loaded: bool


class ModelsOut(BaseModel):
    models: list[RegistryEntryOut]
    current: str | None
    loading: str | None
    progress: LoadProgressOut | None = Field(default=None, description="how far the load in progress has come")


class LoadModelIn(Request):
    name: str = Field(min_length=1, max_length=1024, description="registry name, Hugging Face id (from the local cache) or a folder under the server's model directories")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:N; default cuda when present")
    dtype: str | None = Field(default=None, description="float32, bfloat16 or float16; default bf16 on CUDA, fp32 on CPU")


class LoadModelOut(BaseModel):
    status: str = "loading"
    name: str
