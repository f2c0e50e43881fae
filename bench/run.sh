#!/usr/bin/env bash
# bench/run.sh [--smoke] [NAME...]: build and run Bulkhead's benchmarks (all of them, or
# those named) and print one JSON object per line per figure on stdout:
#   {"benchmark","metric","value","unit","target"[,"baseline","baseline_value","ratio"]...}
# Everything else (build output, progress) goes to stderr. See docs/benchmarks.md.
#
# --smoke: every benchmark at its smoke size (bench_smoke_size in its script: few
# iterations, small inputs), to prove the benchmarks still work, not to measure; CI runs it
# as the ctest bench_smoke. Figures are marked "smoke":true and carry no target. Exit 1 when
# a benchmark fails, prints no figure, prints a line that is not a figure, or declares no
# smoke size; a "skipped" figure (no root, a tool not installed) is not a failure. A summary
# (status and seconds per benchmark) goes to stderr.
#
# A benchmark is a script bench/benchmarks/<name>.sh (contract in bench/lib.sh); adding
# one is dropping a script there with its bench_smoke_size line (and, for a new executable,
# adding it to the bulkhead_benchmarks target in bench/CMakeLists.txt). They run in name
# order.
#
# Environment:
#   BULKHEAD_BUILD_DIR   build directory (default: build/ at the repository root)
#   BENCH_NO_BUILD=1     skip the cmake configure/build step
#   BENCH_SMOKE_TIMEOUT  seconds one benchmark may take with --smoke (default 120)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

available() {
  local f
  for f in "$BENCH_DIR"/benchmarks/*.sh; do
    [ -e "$f" ] && basename "$f" .sh
  done | sort
}

usage() {
  cat >&2 <<USAGE
usage: bench/run.sh [--list] [--smoke] [NAME...]
benchmarks: $(available | tr '\n' ' ')
USAGE
}

names=()
smoke=0
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    --list) available; exit 0 ;;
    --smoke) smoke=1 ;;
    -*) usage; exit 2 ;;
    *)
      if [ ! -f "$BENCH_DIR/benchmarks/$arg.sh" ]; then
        bench_log "bench/run.sh: no benchmark \"$arg\""
        usage
        exit 2
      fi
      names+=("$arg")
      ;;
  esac
done
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(available)
else
  # Run in name order whatever the order given (a later one may reuse an earlier one's files).
  mapfile -t names < <(printf '%s\n' "${names[@]}" | sort -u)
fi

export BENCH_DIR
export BULKHEAD_BUILD_DIR=${BULKHEAD_BUILD_DIR:-$REPO/build}
export BENCH_BIN=$BULKHEAD_BUILD_DIR/bin

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  bench_log "bench/run.sh: building in $BULKHEAD_BUILD_DIR"
  {
    cmake -S "$REPO" -B "$BULKHEAD_BUILD_DIR"
    cmake --build "$BULKHEAD_BUILD_DIR" --target bulkhead_benchmarks -j "$(nproc)"
  } >&2
fi

BENCH_WORK=$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-bench.XXXXXX")
export BENCH_WORK
trap 'rm -rf "$BENCH_WORK"' EXIT

error_line() {  # NAME REASON
  printf '{"benchmark":"%s","metric":null,"value":null,"unit":null,"target":null,"error":"%s"}\n' \
    "$1" "$(bench_json_escape "$2")"
}

if [ "$smoke" = 0 ]; then
  status=0
  for name in "${names[@]}"; do
    bench_log "bench/run.sh: == $name =="
    rc=0
    bash "$BENCH_DIR/benchmarks/$name.sh" || rc=$?
    if [ "$rc" -ne 0 ]; then
      bench_log "bench/run.sh: $name failed (exit $rc)"
      error_line "$name" "exit $rc"
      status=1
    fi
  done
  exit $status
fi

# --smoke
export BENCH_SMOKE=1
smoke_timeout=${BENCH_SMOKE_TIMEOUT:-120}
status=0
summary=()
started_all=$SECONDS
for name in "${names[@]}"; do
  script=$BENCH_DIR/benchmarks/$name.sh
  if ! grep -q '^bench_smoke_size\b' "$script"; then
    bench_log "bench/run.sh --smoke: $name declares no smoke size (a bench_smoke_size line, see bench/lib.sh)"
    error_line "$name" "no smoke size declared"
    summary+=("$(printf '%-14s %-8s %4s    %s' "$name" FAILED - "no smoke size declared")")
    status=1
    continue
  fi
  bench_log "bench/run.sh --smoke: == $name =="
  out=$BENCH_WORK/smoke-$name.jsonl
  started=$SECONDS
  rc=0
  # timeout puts the benchmark in a process group of its own and signals the whole group, so
  # the programs it started stop with it (-k: KILL 15 s after a TERM its cleanup ignores).
  # Run in the background so that INT/TERM of run.sh reaches this trap at once and is
  # passed on (the benchmark's own traps then remove its namespaces).
  timeout -k 15 "$smoke_timeout" bash "$script" >"$out" &
  bench_pid=$!
  trap 'kill -TERM "$bench_pid" 2>/dev/null; wait "$bench_pid"; exit 130' INT TERM
  wait "$bench_pid" || rc=$?
  trap - INT TERM
  took=$((SECONDS - started))
  verdict=$(python3 - "$out" <<'PY'
import json, sys
path = sys.argv[1]
figures = skipped = 0
problem = ""
reasons = []
with open(path, encoding="utf-8", errors="replace") as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
with open(path, "w", encoding="utf-8") as f:
    for line in lines:
        try:
            figure = json.loads(line)
        except ValueError:
            problem = problem or "not a JSON figure: " + line[:120]
            continue
        if not isinstance(figure, dict) or not isinstance(figure.get("benchmark"), str) or "metric" not in figure:
            problem = problem or "not a figure: " + line[:120]
            continue
        if "error" in figure:
            problem = problem or "error figure: " + str(figure["error"])[:120]
        if "skipped" in figure:
            skipped += 1
            reasons.append(str(figure["skipped"]))
        else:
            figures += 1
        # A smoke figure is not a measurement: no target, nothing met or missed.
        figure["target"] = None
        figure.pop("met", None)
        figure["smoke"] = True
        f.write(json.dumps(figure, separators=(",", ":"), ensure_ascii=False) + "\n")
if not problem and figures == 0 and skipped == 0:
    problem = "printed no figure"
if problem:
    print("FAILED\t" + problem)
elif figures == 0:
    print("skipped\t" + "; ".join(sorted(set(reasons)))[:200])
else:
    print("ok\t%d figures%s" % (figures, ", %d skipped" % skipped if skipped else ""))
PY
  ) || verdict=$'FAILED\tunreadable output'
  cat "$out"
  state=${verdict%%$'\t'*}
  detail=${verdict#*$'\t'}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    state=FAILED detail="timed out after ${smoke_timeout} s"
  elif [ "$rc" -ne 0 ]; then
    state=FAILED detail="exit $rc${detail:+; $detail}"
  fi
  if [ "$state" = FAILED ]; then
    error_line "$name" "$detail"
    status=1
  fi
  summary+=("$(printf '%-14s %-8s %4d s  %s' "$name" "$state" "$took" "$detail")")
done
bench_log ""
bench_log "bench/run.sh --smoke: $((SECONDS - started_all)) s"
for line in "${summary[@]}"; do bench_log "  $line"; done
exit $status
