"""POST /api/intervene: baseline vs intervened vs control, weights restored after the call."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep, SettingsDep
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES
from app.api.schemas.intervene import IntervenIn, as_core
from outlier_core.intervene.corpus import bundled, from_text
from outlier_core.intervene.evaluate import InterventionResult, evaluate_encoded
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import encode

router = APIRouter(tags=["interventions"])


def _intervene(model: LoadedModel, body: IntervenIn, max_tokens: int) -> InterventionResult:
    prompt = encode(model, body.text, body.prepend_bos, max_tokens)
    interventions = as_core(body.interventions, "interventions")
    edits = as_core(body.weights, "weights")
    if body.eval_text is not None:
        eval_text = from_text(body.eval_text, "eval_text", "eval_text")
    else:
        eval_text = bundled(body.eval_corpus) if body.eval_corpus else None
    return evaluate_encoded(model, prompt, interventions, edits, eval_text=eval_text, top_k=body.top_k, seed=body.seed, eval_window=max_tokens)


@router.post("/intervene", response_model=InterventionResult, responses=MODEL_RESPONSES | DELTAS_ATTACHED)
async def intervene(body: IntervenIn, service: ServiceDep, settings: SettingsDep) -> InterventionResult:
    run = service.run_on_plain_weights if body.weights else service.run  # weight edits name parameters
    return await run(_intervene, body, settings.max_tokens)
