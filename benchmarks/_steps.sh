# Shared by gpu_suite.sh and gpu_deploy.sh (sourced, not run): a clock-bounded list of steps, each under
# its own `timeout`, each logged to $work/<step>.log, each summarized in $summary as soon as it ends.
#
# Use: cd to the checkout, root=$(pwd), source this file, then `gpu_script_setup NAME "$@"` (it sets dry,
# budget, reserve, py, boot and source_dir, or exits 2). Set work (step logs and results) and summary (the
# Markdown summary), e.g. with `gpu_script_outputs`; then: suite_begin TITLE; step NAME SECONDS MIN_SECONDS KIND command...;
# suite_end TARBALL. KIND is `pytest` (summarize the pass/fail lines) or `bench` (the log's last lines).

sees_gpu() { "$1" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }

# The setup both scripts share: the environment, --dry-run, the budget, the interpreter ($PYTHON, else
# .venv/bin/python where it sees a GPU or for a dry run, else python3), the import check, and the exit 2
# (one line) where no CUDA device is visible outside a dry run. NAME prefixes the error lines.
gpu_script_setup() {
  local name=$1
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
  unset TRITON_INTERPRET
  dry=0
  [ "${2:-}" = "--dry-run" ] && dry=1
  budget=${GPU_SUITE_BUDGET:-540}
  reserve=15
  if [ -n "${PYTHON:-}" ]; then py=$PYTHON
  elif [ -x .venv/bin/python ] && { [ "$dry" = 1 ] || sees_gpu .venv/bin/python; }; then py=.venv/bin/python
  else py=python3; fi
  boot=("$py" "$root/benchmarks/_bootstrap.py")
  if ! source_dir=$("${boot[@]}" --check 2>&1 | tail -n 1); then
    echo "$name: $py cannot import kdforge from $root: $source_dir" >&2
    exit 2
  fi
  if ! sees_gpu "$py" && [ "$dry" = 0 ]; then
    echo "$name: no CUDA device visible to $py; nothing measured (run it on a GPU machine, or --dry-run)" >&2
    exit 2
  fi
}

# Where a run's results go (not for a dry run): with $OUT set (a device call), a scratch folder packed into
# $OUT/NAME.tar.gz next to $OUT/summary.md; otherwise benchmarks/results/PREFIX-<device>-<date>/. Sets
# device, work, summary and tarball.
gpu_script_outputs() {
  local name=$1 prefix=$2
  device=$("$py" -c 'import re,torch; print(re.sub(r"[^a-z0-9]+","-",torch.cuda.get_device_name(0).lower()).strip("-"))')
  if [ -n "${OUT:-}" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")
    # kdforge signs what it builds with a key under $KDFORGE_HOME (default ~/.config/kdforge): on a lent,
    # fresh machine a private scratch folder (never packed into $OUT) serves this run's deploy and bench.
    if [ -z "${KDFORGE_HOME:-}" ]; then
      KDFORGE_HOME=$(mktemp -d "${TMPDIR:-/tmp}/kdforge-home.XXXXXX")
      export KDFORGE_HOME
    fi
    summary="$OUT/summary.md"
    tarball="$OUT/$name.tar.gz"
    mkdir -p "$OUT"
  else
    work="benchmarks/results/$prefix-$device-$(date +%F)"
    summary="$work/summary.md"
    tarball=""
  fi
}

suite_begin() {
  started=$(date +%s)
  overall=0
  mkdir -p "$work"
  {
    echo "# $1"
    echo
    echo "$(date -u +%FT%TZ), budget ${budget} s. Each step runs under its own timeout; a step that times"
    echo "out keeps the rows it wrote. Logs and results: the tarball next to this file (or $work)."
    echo
  } > "$summary"
}

elapsed() { echo $(( $(date +%s) - started )); }

step() {
  local name=$1 want=$2 least=$3 kind=$4
  shift 4
  if [ "$dry" = 1 ]; then
    printf '  %-18s <= %3d s  %s\n' "$name" "$want" "$*"
    return 0
  fi
  local left=$(( budget - reserve - $(elapsed) ))
  local limit=$(( want < left ? want : left ))
  if [ "$limit" -lt "$least" ]; then
    echo "## $name: skipped, ${left} s left of the budget (needs >= ${least} s)" >> "$summary"
    echo >> "$summary"
    overall=1
    return 0
  fi
  local t0; t0=$(date +%s)
  echo "[gpu] $name (<= ${limit} s): $*" >&2
  timeout -k 5 "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  local status="ok"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status="TIMED OUT after ${limit} s (rows written before it are kept)"
    overall=1
  elif [ "$rc" != 0 ]; then
    status="exit $rc"
    overall=1
  fi
  {
    echo "## $name: $status, ${took} s"
    echo
    echo '```'
    if [ "$kind" = pytest ]; then
      grep -E '^(FAILED|ERROR)|passed|failed|error|no tests ran|SKIPPED' "$work/$name.log" | tail -n 25
    else
      tail -n 30 "$work/$name.log"
    fi
    echo '```'
    echo
  } >> "$summary"
}

suite_end() {
  local tarball=$1
  echo "Finished in $(elapsed) s (budget ${budget} s), overall exit ${overall}." >> "$summary"
  cp "$summary" "$work/summary.md" 2>/dev/null || true
  if [ -n "$tarball" ]; then
    tar -czf "$tarball" -C "$work" . && echo "[gpu] results: $tarball, summary: $summary" >&2
  else
    echo "[gpu] results in $work" >&2
  fi
}
