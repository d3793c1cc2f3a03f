"""`outlier-lab export-peft`: a fine-tune run's sparse deltas as a peft adapter folder.

    outlier-lab export-peft runs/20250101-120000-outliers --method mask --out adapters/outliers

The folder loads on the plain base model with `PeftModel.from_pretrained(model, DIR)` once
`outlier_core.tune.peft_mask` is imported (it registers the `outlier_mask` method with peft).
"""

from __future__ import annotations

import argparse

from app.cli.common import emit_json, emit_lines
from outlier_core.tune.methods import COORDINATE_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run's folder (what `outlier-lab finetune` wrote under --runs-dir)")
    parser.add_argument("--method", choices=COORDINATE_METHODS, default="mask", help="which of the run's trainings to export (default: %(default)s)")
    parser.add_argument("--out", required=True, help="the adapter folder to write (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> None:
    from outlier_core.tune.peft_export import export_run

    out, mask = export_run(args.run, args.method, args.out)
    if args.json:
        emit_json({"adapter": str(out), "method": args.method, "mask": mask.name, "model": mask.model, "count": mask.count})
        return
    emit_lines([
        f"wrote {out}: the {args.method} run's deltas on {mask.count:,} coordinates of {mask.model} (mask {mask.name!r})",
        "load it on the plain base model: import outlier_core.tune.peft_mask; PeftModel.from_pretrained(model, DIR)",
    ])
