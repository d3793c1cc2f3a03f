"""lm-eval after a fine-tune: the base model, then each method's run with its deltas on.

Each run is put back on the model the way a user applies it (`applied_run.attach_run`:
the method loads what it saved), scored through lm-evaluation-harness (`lm_eval_run`),
and taken off again, so the numbers are those of the saved deltas, not of whatever the
training loop left in memory. Written beside the runs:

    FOLDER/lm_eval.json            {"base": scores, "<method>": scores, ...}
    FOLDER/<method>/lm_eval.json   that method's scores
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Callable

from outlier_core.contract import to_json, write_json
from outlier_core.load.models import LoadedModel
from outlier_core.tune.applied_run import attach_run


def score_runs(
    model: LoadedModel,
    folder: str | Path,
    methods: Sequence[str],
    tasks: Sequence[str],
    limit: int | None = None,
    between: Callable[[], None] = lambda: None,
    base: bool = True,
) -> dict[str, dict]:
    """lm-eval scores (`LmEvalResult` as JSON) of the base (unless `base` is false) and of each
    method of the comparison in `folder`."""
    from outlier_core.tune.lm_eval_run import evaluate

    folder = Path(folder)
    scores = {"base": to_json(evaluate(model, list(tasks), limit))} if base else {}
    for method in methods:
        between()
        applied = attach_run(model, folder, method)
        try:
            scores[method] = to_json(evaluate(model, list(tasks), limit))
        finally:
            applied.detach()
        write_json(folder / method / "lm_eval.json", scores[method])
    write_json(folder / "lm_eval.json", scores)
    return scores
