#!/usr/bin/env bash
# bench/run.sh [NAME...]: build and run Bulkhead's benchmarks (all of them, or those named)
# and print one JSON object per line per figure on stdout:
#   {"benchmark","metric","value","unit","target"[,"baseline","baseline_value","ratio"]...}
# Everything else (build output, progress) goes to stderr. See docs/benchmarks.md.
#
# A benchmark is a script bench/benchmarks/<name>.sh (contract in bench/lib.sh); adding
# one is dropping a script there (and, for a new executable, adding it to the
# bulkhead_benchmarks target in bench/CMakeLists.txt). They run in name order.
#
# Environment:
#   BULKHEAD_BUILD_DIR  build directory (default: build/ at the repository root)
#   BENCH_NO_BUILD=1    skip the cmake configure/build step
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
usage: bench/run.sh [--list] [NAME...]
benchmarks: $(available | tr '\n' ' ')
USAGE
}

names=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    --list) available; exit 0 ;;
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

status=0
for name in "${names[@]}"; do
  bench_log "bench/run.sh: == $name =="
  rc=0
  bash "$BENCH_DIR/benchmarks/$name.sh" || rc=$?
  if [ "$rc" -ne 0 ]; then
    bench_log "bench/run.sh: $name failed (exit $rc)"
    printf '{"benchmark":"%s","metric":null,"value":null,"unit":null,"target":null,"error":"exit %s"}\n' \
      "$name" "$rc"
    status=1
  fi
done
exit $status
