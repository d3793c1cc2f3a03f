"""Memory of the API process while it runs a fine-tune job, and of the job's run process.

The real app serves the model in this process (TestClient, the same routes and runner as
`outlier-lab api`); one fine-tune job trains the mask from the outlier rules and the chosen
baselines in a run process of its own. Reported:

- the API process's peak RSS growth during the job (Linux VmHWM, reset when the job starts):
  it must stay well below the model's size, since the API never holds a training copy;
- the run process's peak RSS (its VmHWM, sampled while it runs) and, from its result,
  each method's training peak as the run measured it (on CUDA: the allocator's peak).

    .venv/bin/python bench/bench_jobs.py [--model smollm2-135m] [--device cpu] [--steps 3] [--baseline lora]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

MB = 2**20


def rss_kb(pid: int, key: str) -> int | None:
    """VmRSS (now) or VmHWM (peak since the last reset) of a process, in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration):
        return None


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--baseline", nargs="*", default=["lora"])
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.api.settings import Settings
    from outlier_core.load.models import load_model

    model = load_model(args.model, device=args.device)
    model_mb = sum(p.numel() * p.element_size() for p in model.hf_model.parameters()) / MB
    me = os.getpid()
    with TemporaryDirectory() as runs, TestClient(create_app(Settings(runs_dir=Path(runs)), model=model)) as client:
        suggested = client.post("/api/masks/suggest", json={"budget": args.budget, "text": "The old lighthouse keeper walked down to the harbour."})
        suggested.raise_for_status()
        mask = suggested.json()["mask"]
        before_kb = rss_kb(me, "VmRSS")
        reset_peak(me)
        body = {"mask_id": mask["id"], "baselines": args.baseline, "steps": args.steps, "batch_size": 4, "seq_len": 128}
        job = client.post("/api/finetune", json=body)
        job.raise_for_status()
        run_peak_kb, status = 0, job.json()
        while status["state"] in ("queued", "running"):
            if status.get("pid"):
                run_peak_kb = max(run_peak_kb, rss_kb(status["pid"], "VmHWM") or 0)
            time.sleep(0.05)
            status = client.get(f"/api/jobs/{status['id']}").json()
        api_peak_kb = rss_kb(me, "VmHWM")
        if status["state"] != "done":
            sys.exit(f"the job {status['state']}: {status['error']}")
        result = client.get(f"/api/jobs/{status['id']}/result").json()
    api_growth_mb = (api_peak_kb - before_kb) / 1024
    sys.stdout.write(
        f"{args.model} on {model.device} ({str(model.dtype).removeprefix('torch.')}): weights {model_mb:,.0f} MB; "
        f"mask {mask['count']:,} coordinates, {args.steps} steps of 4 x 128 tokens per method\n"
        f"API process: RSS {before_kb / 1024:,.0f} MB before the job, peak growth during it {api_growth_mb:,.0f} MB "
        f"({api_growth_mb / model_mb:.2f} x the weights)\n"
        f"run process: peak RSS {run_peak_kb / 1024:,.0f} MB (sampled every 50 ms)\n"
    )
    for run in result["runs"]:
        sys.stdout.write(f"  {run['name']:<16} training peak {run['peak_memory_mb']:,.0f} MB above the loaded model\n")


if __name__ == "__main__":
    main()
