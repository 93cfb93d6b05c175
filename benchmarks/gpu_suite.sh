#!/usr/bin/env bash
# The one command to run on a machine with a CUDA GPU. It writes everything under
# benchmarks/results/gpu-<device>-<date>/ (commit that folder and quote it):
#   tests-kernels.txt   the kernel tests, compiled (no interpreter when CUDA is present), incl. `gpu` ones
#   tests-gpu.txt       every test marked `gpu` across the suite
#   kernels-*.{json,md} benchmarks/loss_kernels.py: Triton vs eager vs torch.compile (vs Liger when installed)
#   train_step-*.{json,md} benchmarks/train_step.py on CUDA
#   deploy-*.{json,md}  benchmarks/deploy.py --device cuda: the digits pipeline deployed on every backend usable
#                       there (torch / torch.compile / AOTInductor on CUDA, ONNX Runtime CUDA and TensorRT when
#                       installed), CUDA-event latency, teacher vs student
#   native-*.json       kdforge-runner (built into build/native-gpu; TensorRT compiled in when CMake finds it,
#                       e.g. with TensorRT_ROOT set) on the student's CUDA .pt2 and its engines, batch 1 and 64
# Python: $PYTHON, else .venv/bin/python when it sees a GPU, else python3 (GPU images ship their own torch).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo .venv/bin/python; return
  fi
  echo python3
}
py=$(pick_python)
if ! "$py" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  echo "gpu_suite: no CUDA device visible to $py; run this on a machine with an NVIDIA GPU" >&2
  exit 2
fi
device=$("$py" -c 'import re,torch; print(re.sub(r"[^a-z0-9]+","-",torch.cuda.get_device_name(0).lower()).strip("-"))')
out="benchmarks/results/gpu-$device-$(date +%F)"
mkdir -p "$out"
status=0
{ nvidia-smi || true; "$py" -c 'import torch,triton; print("torch", torch.__version__, "triton", triton.__version__)'; } \
  > "$out/environment.txt" 2>&1

"$py" -m pytest -q -rs tests/kernels 2>&1 | tee "$out/tests-kernels.txt" || status=1
"$py" -m pytest -q -rs -m "gpu or tensorrt" tests 2>&1 | tee "$out/tests-gpu.txt" || status=1
"$py" benchmarks/loss_kernels.py --out "$out" || status=1
"$py" benchmarks/train_step.py --device cuda --out "$out" || status=1
"$py" benchmarks/deploy.py --device cuda --skip-zoo --out runs/gpu-deploy --results "$out" || status=1
"$py" -m kdforge doctor > "$out/doctor.txt" 2>&1 || status=1
if "$py" -m kdforge build-native --build-dir build/native-gpu > "$out/native.txt" 2>&1; then
  for model in runs/gpu-deploy/deploy-student/*.pt2 runs/gpu-deploy/deploy-student/*.engine; do
    [ -e "$model" ] || continue
    case "$model" in *.engine) grep -q tensorrt build/native-gpu/backends.txt || continue ;; esac
    build/native-gpu/kdforge-runner --model "$model" --batch 1,64 --json "$out/native-$(basename "$model").json" \
      >> "$out/native.txt" 2>&1 || status=1
  done
else
  status=1
fi
echo "gpu_suite: results in $out (exit $status)"
exit $status
