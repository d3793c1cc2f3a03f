"""POST /api/intervene: baseline vs intervened vs control, weights restored after the call.

The evaluation text is capped in tokens (`max_eval_tokens`) and scored one window per
turn in the model's queue, so short requests run between the windows of a long one; /api/queue
shows the evaluation's progress (window i of n) while it runs. The work stops at its next
window or layer when the client disconnects, cancels it (POST /api/queue/{id}/cancel) or the
request's time (`request_seconds`) runs out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import ServiceDep, SettingsDep
from app.api.errors import ApiError
from app.api.schemas.common import DELTAS_ATTACHED, MODEL_RESPONSES, error
from app.api.schemas.intervene import IntervenIn, as_core
from app.api.settings import Settings
from app.api.stopping import RequestStop, watched
from outlier_core.intervene.corpus import bundled, from_text
from outlier_core.intervene.evaluate import (
    Cancelled,
    Evaluation,
    InterventionResult,
    ModelChanged,
    finish,
    plan_evaluation,
    score_window,
)
from outlier_core.load.models import LoadedModel
from outlier_core.load.tokens import encode

router = APIRouter(tags=["interventions"])

CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the log does


def _plan(model: LoadedModel, body: IntervenIn, settings: Settings, stop: RequestStop) -> Evaluation:
    prompt = encode(model, body.text, body.prepend_bos, settings.max_tokens)
    interventions = as_core(body.interventions, "interventions")
    edits = as_core(body.weights, "weights")
    if body.eval_text is not None:
        eval_text = from_text(body.eval_text, "eval_text", "eval_text")
    else:
        eval_text = bundled(body.eval_corpus) if body.eval_corpus else None
    return plan_evaluation(
        model, prompt, interventions, edits, eval_text=eval_text, top_k=body.top_k, seed=body.seed,
        eval_window=settings.max_tokens, max_eval_tokens=settings.max_eval_tokens, should_stop=stop,
    )


def _stopped(stop: RequestStop, done: int, total: int) -> ApiError:
    if stop.client_gone:
        return ApiError(CLIENT_GONE, "the client disconnected; the evaluation stopped")
    if stop.cancelled:
        return ApiError(409, f"the evaluation was cancelled ({done} of {total} windows done)" if total else "the evaluation was cancelled before its first window")
    return ApiError(
        422, f"eval_text: scoring ran past the server's limit of {stop.seconds:g} s per request "
        f"({done} of {total} windows done); send a shorter text", "eval_text",
    )


def _what(body: IntervenIn) -> str:
    if body.eval_text is not None:
        return "an evaluation of your text"
    return f"an evaluation of bundled {body.eval_corpus}" if body.eval_corpus else "an intervention"


@router.post(
    "/intervene", response_model=InterventionResult,
    responses=MODEL_RESPONSES | DELTAS_ATTACHED | error(409, "the model changed between two windows of the evaluation, or its client cancelled it"),
)
async def intervene(body: IntervenIn, request: Request, service: ServiceDep, settings: SettingsDep) -> InterventionResult:
    run = service.run_on_plain_weights if body.weights else service.run  # weight edits name parameters
    async with watched(request, settings.request_seconds) as stop:
        evaluation = None
        scores = []
        try:
            with service.queue.working(_what(body), "window", stop.cancel) as work:
                evaluation = await run(_plan, body, settings, stop)
                for i in range(len(evaluation.windows)):
                    service.queue.progress(work, i, len(evaluation.windows))
                    scores.append(await run(score_window, evaluation, i, stop))
        except Cancelled as err:
            raise _stopped(stop, len(scores), len(evaluation.windows) if evaluation else 0) from err
        except ModelChanged as err:
            raise ApiError(409, f"model: {err}; send the request again", "model") from err
    return finish(evaluation, scores)
