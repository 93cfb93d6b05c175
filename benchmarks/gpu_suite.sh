#!/usr/bin/env bash
# The loss kernels on one CUDA GPU, in one device call: finishes within GPU_SUITE_BUDGET seconds (540 by
# default, for a 600 s command limit), every step under its own timeout, the most important numbers first:
#   env                 nvidia-smi, versions, where kdforge is imported from
#   kernels-training    the compiled kernels' correctness tests at training sizes (pytest -m gpu: fp16 with a
#                       loss scale at B=1024/C=1000 and 4096x32000 among them) and the train step's no-sync test
#   kernels-amp         the AMP tests at small sizes: fp16 + loss scale, bf16, fp32, teacher gradients
#   breakdown           per-kernel time, GB/s against the bytes model, registers and spills, copy bandwidth
#   compare-{kd,dkd,dist}  Triton vs eager vs torch.compile (vs Liger when installed) at 4096x32000 and
#                       8192x128256 in bf16 and fp32
#   kernels-rest        the rest of tests/kernels (pytest-xdist when installed)
#   train-step          benchmarks/train_step.py --device cuda
#   one-chunk           KD/DKD rows of one chunk (C <= 2048), Triton (5 N*e) vs eager
# With $OUT set (a device call): $OUT/summary.md and $OUT/gpu-suite.tar.gz (every log, JSON and JSONL row
# file); otherwise everything stays in benchmarks/results/gpu-<device>-<date>/. Runs from the checkout as
# copied (benchmarks/_bootstrap.py maps kdforge.* onto its folders; nothing is installed).
#   bash benchmarks/gpu_suite.sh            on a GPU machine
#   bash benchmarks/gpu_suite.sh --dry-run  anywhere: the plan and the import check, nothing measured
# Without a CUDA device (and without --dry-run) it exits 2 with one line: no figure is written off a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=benchmarks/_steps.sh
. "$root/benchmarks/_steps.sh"
gpu_script_setup gpu_suite "$@"
pytest=("${boot[@]}" -m pytest -p benchmarks._bootstrap -p no:cacheprovider -q -rs)

shapes=(--shapes 4096x32000 8192x128256 --dtypes bf16 fp32)
xdist=()
"$py" -c 'import xdist' 2>/dev/null && xdist=(-n 8)
if [ "$dry" = 1 ]; then
  echo "gpu_suite --dry-run: kdforge.kernels from $source_dir; GPU: $(sees_gpu "$py" && echo yes || echo no)"
  echo "plan (budget ${budget} s, ${reserve} s kept for packing; each step's timeout is capped by what is left):"
  work=/nonexistent summary=/dev/null
else
  gpu_script_outputs gpu-suite gpu
  suite_begin "GPU suite: loss kernels on $device"
fi

step env 20 5 bench bash -c "nvidia-smi; $py -c 'import sys,torch,triton; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)'; ${boot[*]} --check; $py -c 'import xdist' 2>&1 | tail -n 1; $py -c 'import hypothesis' 2>&1 | tail -n 1"
step kernels-training 90 30 pytest "${pytest[@]}" -m gpu tests/kernels tests/compress/test_trainer.py
step kernels-amp 40 15 pytest "${pytest[@]}" -m "not gpu" tests/kernels/test_kernel_amp.py
step breakdown 60 20 bench "${boot[@]}" benchmarks/loss_kernels.py --breakdown "${shapes[@]}" --reps 10 \
  --out "$work" --rows "$work/breakdown.jsonl" --name kernels-breakdown
for loss in kd dkd dist; do
  want=65
  [ "$loss" = kd ] && want=70
  step "compare-$loss" "$want" 25 bench "${boot[@]}" benchmarks/loss_kernels.py --losses "$loss" "${shapes[@]}" \
    --variants triton eager compile liger --reps 10 --out "$work" --rows "$work/compare.jsonl" \
    --name "kernels-compare-$loss"
done
step kernels-rest 50 20 pytest "${pytest[@]}" "${xdist[@]}" -m "not gpu" tests/kernels \
  --ignore=tests/kernels/test_sm90_resources.py --ignore=tests/kernels/test_kernel_amp.py \
  --ignore=tests/kernels/test_gpu_scripts.py
step train-step 40 20 bench "${boot[@]}" benchmarks/train_step.py --device cuda --reps 3 --steps 3 --out "$work"
step one-chunk 20 10 bench "${boot[@]}" benchmarks/loss_kernels.py --losses kd dkd --shapes 32768x1000 16384x2047 \
  --dtypes bf16 --variants triton eager --reps 10 --out "$work" --rows "$work/one-chunk.jsonl" \
  --name kernels-one-chunk

if [ "$dry" = 1 ]; then
  echo "gpu_suite --dry-run: nothing measured, nothing written"
  exit 0
fi
suite_end "$tarball"
exit "$overall"
