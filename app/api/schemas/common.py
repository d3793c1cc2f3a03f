"""Types every schema shares."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from outlier_core.load.sites import SITES

# JSON parsers accept NaN and Infinity; no request may carry them.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1, description="the prompt; its token count, BOS included, must stay within the server's max_tokens")]
Site = Annotated[str, Field(description=f"{', '.join(SITES)}, or a hook suffix such as hook_resid_post")]


class Request(BaseModel):
    """Unknown keys are refused, so a misspelt option fails loudly instead of being ignored."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    detail: str
    field: str | None = None


ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorOut, "description": "the body is not valid JSON"},
    401: {"model": ErrorOut, "description": "missing or wrong X-API-Key"},
    413: {"model": ErrorOut, "description": "request body too large"},
    422: {"model": ErrorOut, "description": "bad input; `field` names it"},
}


def error(status: int, description: str) -> dict[int | str, dict]:
    """One more documented error response, in the common shape."""
    return {status: {"model": ErrorOut, "description": description}}


MODEL_RESPONSES: dict[int | str, dict] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorOut, "description": "no model is serving yet (loading or swapping)"},
}

# Routes that read parameters by name (`ModelService.run_on_plain_weights`).
DELTAS_ATTACHED: dict[int | str, dict] = error(409, "a run's sparse or LoRA deltas sit on top of the weights: merge or detach it first")
