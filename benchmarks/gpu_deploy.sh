#!/usr/bin/env bash
# Deploy and the native runner on one CUDA GPU, in one device call (the loss kernels are gpu_suite.sh's):
# finishes within GPU_SUITE_BUDGET seconds (540 by default), every step under its own timeout:
#   env           nvidia-smi, versions, `kdforge doctor`
#   tests-gpu     every test marked gpu or tensorrt outside tests/kernels (skipped with their reasons where
#                 TensorRT or onnxruntime-gpu is missing)
#   deploy        benchmarks/deploy.py --device cuda --skip-zoo: the digits pipeline on every backend usable
#                 here (torch / torch.compile / AOTInductor on CUDA; ONNX Runtime CUDA, TensorRT if present)
#   native-build  kdforge build-native into the work folder (TensorRT compiled in when CMake finds it)
#   native-run    kdforge-runner on the student's CUDA .pt2 (and engines), batch 1 and 64
# With $OUT set: $OUT/summary.md and $OUT/gpu-deploy.tar.gz (logs and JSON; no model files); otherwise
# benchmarks/results/gpu-deploy-<device>-<date>/. Runs from the checkout as copied (benchmarks/_bootstrap.py).
#   bash benchmarks/gpu_deploy.sh [--dry-run]
# Without a CUDA device (and without --dry-run) it exits 2 with one line.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=benchmarks/_steps.sh
. "$root/benchmarks/_steps.sh"
gpu_script_setup gpu_deploy "$@"

if [ "$dry" = 1 ]; then
  echo "gpu_deploy --dry-run: kdforge.kernels from $source_dir; GPU: $(sees_gpu "$py" && echo yes || echo no)"
  echo "plan (budget ${budget} s, ${reserve} s kept for packing; each step's timeout is capped by what is left):"
  work=/nonexistent summary=/dev/null runs=/nonexistent
else
  gpu_script_outputs gpu-deploy gpu-deploy
  runs=$(mktemp -d "${TMPDIR:-/tmp}/gpu-deploy-runs.XXXXXX")  # models and engines: not packed
  suite_begin "GPU deploy and native runner on $device"
fi

native="$runs/native-gpu"
step env 30 5 bench bash -c "nvidia-smi; ${boot[*]} -m kdforge doctor"
step tests-gpu 130 30 pytest "${boot[@]}" -m pytest -p benchmarks._bootstrap -p no:cacheprovider -q -rs \
  -m "gpu or tensorrt" tests --ignore=tests/kernels --deselect tests/compress/test_trainer.py
step deploy 170 60 bench "${boot[@]}" benchmarks/deploy.py --device cuda --skip-zoo --out "$runs/deploy" \
  --results "$work"
step native-build 120 30 bench "${boot[@]}" -m kdforge build-native --build-dir "$native"
step native-run 50 10 bench bash -c "
  status=0
  for model in '$runs'/deploy/deploy-student/*.pt2 '$runs'/deploy/deploy-student/*.engine; do
    [ -e \"\$model\" ] || continue
    case \"\$model\" in *.engine) grep -q tensorrt '$native/backends.txt' || continue ;; esac
    '$native/kdforge-runner' --model \"\$model\" --batch 1,64 --json '$work'/native-\$(basename \"\$model\").json \
      || status=1
  done
  exit \$status"

if [ "$dry" = 1 ]; then
  echo "gpu_deploy --dry-run: nothing measured, nothing written"
  exit 0
fi
suite_end "$tarball"
exit "$overall"
