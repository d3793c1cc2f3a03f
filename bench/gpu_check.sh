#!/usr/bin/env bash
# The GPU check, ready for whenever a box with NVIDIA GPUs is at hand (under ten minutes on
# one GPU): the GPU-marked tests, the benchmarks on CUDA in bf16 (scan, intervene, fine-tune
# step time and peak memory for mask / LoRA / full, the API's memory during a job), and a
# 2-process data-parallel fine-tune beside a 1-process one when there are two GPUs, and the
# big-model figures (an 8B model from the HF cache, else a config-built 7B: load, scan,
# intervene, weight statistics, peak memory), and the weight statistics against the
# sum/sum-of-squares floor with a fused (Triton) pass 1's reductions beside them: the 5x
# target's GPU side. Every figure lands in one file, printed at the end for README.
#
#     bash bench/gpu_check.sh            (after `make setup`, with a CUDA build of torch)
#
# On a machine without a usable CUDA device it says so and exits 2, having run nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
if [ ! -x "$python" ]; then
    echo "gpu_check: no .venv here; run 'make setup' first" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi is missing); this check needs one. Nothing was run." >&2
    exit 2
fi
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$gpus" -lt 1 ]; then
    echo "gpu_check: torch sees no CUDA device (torch $("$python" -c 'import torch; print(torch.__version__)')); install a CUDA build of torch. Nothing was run." >&2
    exit 2
fi

out=$(mktemp -d)
figures="$out/figures.txt"
step() {  # step NAME SECONDS COMMAND...: one bounded step, its output kept for the figures
    local name=$1 seconds=$2
    shift 2
    echo "== $name" | tee -a "$figures"
    if ! timeout "$seconds" "$@" 2>"$out/$name.err" | tee -a "$figures"; then
        echo "gpu_check: $name failed or ran past ${seconds}s; its stderr:" | tee -a "$figures"
        tail -20 "$out/$name.err" | tee -a "$figures"
    fi
    echo | tee -a "$figures"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")'
    echo
} | tee "$figures"

step gpu-tests 180 .venv/bin/pytest -q -p no:cacheprovider -m gpu bench/gpu/test_gpu.py
step scan 90 "$python" bench/bench_scan.py --device cuda --repeats 5
step intervene 90 "$python" bench/bench_intervene.py --device cuda --repeats 5
step finetune 240 "$python" bench/bench_finetune.py --device cuda --steps 6
step api-memory 120 "$python" bench/bench_jobs.py --device cuda --steps 3

if [ "$gpus" -ge 2 ]; then
    mask="$out/mask.json"
    .venv/bin/outlier-lab mask suggest --device cuda --budget 10000 --out "$mask" >/dev/null
    for n in 1 2; do
        step "ddp-$n" 180 .venv/bin/outlier-lab finetune --device cuda --mask "$mask" --baseline lora --steps 10 \
            --batch-size 8 --seq-len 128 --processes "$n" --runs-dir "$out/runs-$n"
    done
else
    echo "== ddp: one GPU here; the 2-process run needs two" | tee -a "$figures"
fi

step big-model 240 "$python" bench/bench_big_model.py --device cuda --cache "$out/models"
step weights 150 "$python" bench/bench_weights.py --device cuda --fused --cache "$out/models"
if [ "$gpus" -ge 2 ]; then
    step big-model-spread 180 "$python" bench/bench_big_model.py --device-map auto --cache "$out/models"
fi

echo "gpu_check: done; the figures for README are in $figures"
