# Shared by gpu_suite.sh and gpu_deploy.sh (sourced, not run): a clock-bounded list of steps, each under
# its own `timeout`, each logged to $work/<step>.log, each summarized in $summary as soon as it ends.
#
# Set before use: root, py, budget (seconds for the whole script), reserve (seconds kept for packing),
# work (step logs and results), summary (the Markdown summary), dry (1: print the plan only).
# Then: suite_begin TITLE; step NAME SECONDS MIN_SECONDS KIND command...; suite_end TARBALL.
# KIND is `pytest` (summarize the pass/fail lines) or `bench` (the log's last lines).

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
