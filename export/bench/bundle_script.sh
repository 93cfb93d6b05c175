#!/bin/sh
# measure.sh, written by kdforge (export/bench/bundle.py): times this bundle's candidate files on the device
# it runs on, without Python, and writes results/ for kdforge to import (docs/budget.md, docs/edge.md).
#
#   sh measure.sh [--tool runner|trtexec] [--onnxruntime-root DIR] [--tensorrt-root DIR] [--python PYTHON]
#                 [--trtexec PATH] [--jobs N]
#
# --tool runner (default): kdforge-runner times each file. $KDFORGE_RUNNER names a built runner; otherwise
#   one is built with CMake from native/ into build/ (once), passing -DONNXRUNTIME_ROOT, -DTensorRT_ROOT
#   and -DPython3_EXECUTABLE from the flags above or the environment variables of the same names.
#   TensorRT targets: each ONNX file is built into build/engines/ by trtexec, then timed by the runner.
# --tool trtexec: trtexec builds and times each ONNX file (strongly typed: the precision is in the graph).
# Writes only inside this folder: results/ (machine.txt, <name>.sha256, <name>.json or <name>.trtexec.json,
# logs) and build/.
set -eu

# --- this bundle's target and timing policy (written by kdforge)
@SETTINGS@
# ---

TOOL=runner
JOBS=2
TRTEXEC=${TRTEXEC:-}
ONNXRUNTIME_ROOT=${ONNXRUNTIME_ROOT:-}
TensorRT_ROOT=${TensorRT_ROOT:-}
Python3_EXECUTABLE=${Python3_EXECUTABLE:-}

die() {
    printf 'measure.sh: error: %s\n' "$*" >&2
    exit 2
}

say() {
    printf 'measure.sh: %s\n' "$*" >&2
}

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "$0"
}

while [ $# -gt 0 ]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --tool | --onnxruntime-root | --tensorrt-root | --python | --trtexec | --jobs)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --tool) TOOL=$2 ;;
        --onnxruntime-root) ONNXRUNTIME_ROOT=$2 ;;
        --tensorrt-root) TensorRT_ROOT=$2 ;;
        --python) Python3_EXECUTABLE=$2 ;;
        --trtexec) TRTEXEC=$2 ;;
        --jobs) JOBS=$2 ;;
        esac
        shift 2
        ;;
    *) die "unknown option $1 (see: sh measure.sh --help)" ;;
    esac
done

case $TOOL in
runner | trtexec) ;;
*) die "--tool must be runner or trtexec, not $TOOL" ;;
esac
case " $TOOLS " in
*" $TOOL "*) ;;
*) die "this bundle's target ($BACKEND $PRECISION) is timed with --tool $TOOLS, not $TOOL" ;;
esac
case $JOBS in
'' | *[!0-9]*) die "--jobs must be a number, not $JOBS" ;;
esac

BUNDLE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P) || die "cannot find the bundle's folder"
RESULTS="$BUNDLE/results"
BUILD="$BUNDLE/build"
for folder in "$RESULTS" "$BUILD" "$BUILD/engines"; do
    if [ -L "$folder" ]; then die "$folder is a symbolic link; measure.sh writes only inside the bundle"; fi
    mkdir -p -- "$folder"
done

# A fresh output path: whatever was there (a file, a link planted to write elsewhere) is removed first.
fresh() {
    rm -f -- "$1"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 -- "$1" | cut -d ' ' -f 1
    else
        openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
    fi
}

# CPU model (or architecture), logical cores and the CUDA GPU: the form of kdforge's machine_identity().
machine_identity() {
    cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1 | tr -s ' ')
    if [ -z "$cpu" ]; then cpu=$(uname -m); fi
    cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 0)
    gpu=''
    if command -v nvidia-smi >/dev/null 2>&1; then
        gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
    fi
    if [ -z "$gpu" ] && [ -r /proc/device-tree/model ]; then
        gpu=$(tr -d '\000' </proc/device-tree/model)
    fi
    if [ -n "$gpu" ]; then
        printf '%s, %s logical cores, GPU %s\n' "$cpu" "$cores" "$gpu"
    else
        printf '%s, %s logical cores\n' "$cpu" "$cores"
    fi
}

find_trtexec() {
    if [ -z "$TRTEXEC" ]; then
        TRTEXEC=$(command -v trtexec 2>/dev/null || true)
    fi
    if [ -z "$TRTEXEC" ] && [ -x /usr/src/tensorrt/bin/trtexec ]; then
        TRTEXEC=/usr/src/tensorrt/bin/trtexec
    fi
    if [ -z "$TRTEXEC" ] || [ ! -x "$TRTEXEC" ]; then
        die "trtexec not found: put it on PATH, pass --trtexec PATH or set TRTEXEC (JetPack: /usr/src/tensorrt/bin/trtexec)"
    fi
}

runner_has() {
    "$1" --list-backends 2>/dev/null | tr ',' '\n' | tr -d ' ' | grep -qx "$2"
}

build_runner() {
    command -v cmake >/dev/null 2>&1 ||
        die "cmake is not on PATH: install cmake and a C++20 compiler (docs/edge.md), or set KDFORGE_RUNNER to a built kdforge-runner"
    set -- -S "$BUNDLE/native" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
    if [ -n "$ONNXRUNTIME_ROOT" ]; then set -- "$@" "-DONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT"; fi
    if [ -n "$TensorRT_ROOT" ]; then set -- "$@" "-DTensorRT_ROOT=$TensorRT_ROOT"; fi
    if [ -n "$Python3_EXECUTABLE" ]; then set -- "$@" "-DPython3_EXECUTABLE=$Python3_EXECUTABLE"; fi
    say "building kdforge-runner in $BUILD (log: $BUILD/build.log)"
    fresh "$BUILD/build.log"
    cmake "$@" >"$BUILD/build.log" 2>&1 || die "cmake configure failed; see $BUILD/build.log"
    cmake --build "$BUILD" --parallel "$JOBS" >>"$BUILD/build.log" 2>&1 ||
        die "building kdforge-runner failed; see $BUILD/build.log"
}

find_runner() {
    case $BACKEND in
    onnxruntime) hint='pass --onnxruntime-root DIR (an extracted ONNX Runtime release, docs/edge.md)' ;;
    tensorrt) hint='pass --tensorrt-root DIR (JetPack: /usr) with the CUDA toolkit on PATH' ;;
    *) hint='pass --python PYTHON (a Python whose torch compiled the .pt2 files)' ;;
    esac
    if [ -n "${KDFORGE_RUNNER:-}" ]; then
        RUNNER=$KDFORGE_RUNNER
        [ -x "$RUNNER" ] || die "KDFORGE_RUNNER=$RUNNER is not an executable file"
    else
        RUNNER="$BUILD/kdforge-runner"
        if [ ! -x "$RUNNER" ] || ! runner_has "$RUNNER" "$RUNNER_BACKEND"; then build_runner; fi
    fi
    runner_has "$RUNNER" "$RUNNER_BACKEND" ||
        die "$RUNNER has no $RUNNER_BACKEND backend (it has: $("$RUNNER" --list-backends 2>&1 || true)); $hint"
}

check_file() { # name file sha256: the file shipped intact, and its digest recorded for the import
    if [ ! -f "$BUNDLE/$2" ] || [ -L "$BUNDLE/$2" ]; then die "$2 is missing; copy the whole bundle"; fi
    got=$(sha256_of "$BUNDLE/$2")
    [ "$got" = "$3" ] || die "$2 is damaged (its SHA-256 differs from manifest.json's); copy the bundle again"
    fresh "$RESULTS/$1.sha256"
    printf '%s\n' "$got" >"$RESULTS/$1.sha256"
}

trtexec_shapes() { # shapes: the --shapes flag of a dynamic-batch input, nothing for a fixed one
    if [ -n "$1" ]; then printf '%s\n' "--shapes=$1"; fi
}

engine_with_trtexec() { # name file shapes: build/engines/<name>.engine for the runner
    engine="$BUILD/engines/$1.engine"
    fresh "$engine"
    fresh "$RESULTS/$1.build.log"
    # shellcheck disable=SC2046 # trtexec_shapes prints one word or none
    "$TRTEXEC" --onnx="$BUNDLE/$2" --stronglyTyped --saveEngine="$engine" --skipInference \
        $(trtexec_shapes "$3") >"$RESULTS/$1.build.log" 2>&1 ||
        die "trtexec could not build an engine from $2; see results/$1.build.log"
}

time_with_runner() { # name file shapes
    name=$1
    model="$BUNDLE/$2"
    if [ "$BACKEND" = tensorrt ]; then
        engine_with_trtexec "$1" "$2" "$3"
        model="$BUILD/engines/$1.engine"
    fi
    out="$RESULTS/$name.json"
    fresh "$out"
    fresh "$out.tmp"
    fresh "$RESULTS/$name.log"
    set -- --model "$model" --batch "$BATCH" --warmup-ms "$WARMUP_MS" --min-iters "$MIN_ITERS" \
        --min-ms "$MIN_MS" --json "$out"
    if [ -n "$THREADS" ]; then set -- "$@" --threads "$THREADS"; fi
    if ! "$RUNNER" "$@" 2>"$RESULTS/$name.log"; then
        die "kdforge-runner failed on $name: $(tail -n 1 "$RESULTS/$name.log")"
    fi
    cat "$RESULTS/$name.log" >&2
}

time_with_trtexec() { # name file shapes
    out="$RESULTS/$1.trtexec.json"
    fresh "$out"
    fresh "$BUILD/engines/$1.engine"
    fresh "$RESULTS/$1.trtexec.log"
    # shellcheck disable=SC2046 # trtexec_shapes prints one word or none
    "$TRTEXEC" --onnx="$BUNDLE/$2" --stronglyTyped --saveEngine="$BUILD/engines/$1.engine" \
        --exportTimes="$out" --warmUp="$TRT_WARMUP_MS" --duration="$TRT_DURATION_S" \
        --iterations="$MIN_ITERS" --noDataTransfers $(trtexec_shapes "$3") >"$RESULTS/$1.trtexec.log" 2>&1 ||
        die "trtexec failed on $2; see results/$1.trtexec.log"
    say "$1: timed by trtexec (results/$1.trtexec.json)"
}

measure() { # name file sha256 shapes
    check_file "$1" "$2" "$3"
    say "timing $1 ($2) on $BACKEND $PRECISION, batch $BATCH"
    if [ "$TOOL" = trtexec ]; then
        time_with_trtexec "$1" "$2" "$4"
    else
        time_with_runner "$1" "$2" "$4"
    fi
}

fresh "$RESULTS/machine.txt"
machine_identity >"$RESULTS/machine.txt"
if [ "$TOOL" = trtexec ] || [ "$BACKEND" = tensorrt ]; then find_trtexec; fi
if [ "$TOOL" = runner ]; then find_runner; fi

# --- the candidates (written by kdforge): measure NAME FILE SHA256 TRTEXEC_SHAPES
@CANDIDATES@
say "done: results in $RESULTS"
