#!/usr/bin/env bash
# analyzer: detection-engine throughput on one core over 10,000,000 generated drop events
# from 10,000 sources (bench_analyzer prints the JSON lines itself: events/s against the
# 1,000,000 events/s target, engine state and peak RSS).
# Extra bench_analyzer options: BENCH_ANALYZER_ARGS (e.g. "--events 1000000").
#
# Before/after: BENCH_ANALYZER_BASELINE=<another build's bench_analyzer> runs that binary on
# the same events too, alternating with this one BENCH_ANALYZER_ROUNDS times (default 2; a
# busy machine drifts, alternation spreads the drift over both). The baseline's figures come
# out as benchmark "analyzer-baseline", then the ratio of the best throughputs.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_ANALYZER_ARGS="--events 100000 --sources 1000"

if [ ! -x "$BENCH_BIN/bench_analyzer" ]; then
  bench_skip analyzer throughput "bench_analyzer is not built"
  exit 0
fi
baseline=${BENCH_ANALYZER_BASELINE:-}
if [ -z "$baseline" ]; then
  # shellcheck disable=SC2086  # BENCH_ANALYZER_ARGS is a list of options
  "$BENCH_BIN/bench_analyzer" ${BENCH_ANALYZER_ARGS:-}
  exit 0
fi
if [ ! -x "$baseline" ]; then
  bench_log "analyzer: BENCH_ANALYZER_BASELINE=$baseline is not an executable"
  exit 2
fi
rounds=${BENCH_ANALYZER_ROUNDS:-2}
larger() { printf '%s\n' "$@" | sort -g | tail -n 1; }
current_all=()
baseline_all=()
for ((round = 1; round <= rounds; round++)); do
  bench_log "analyzer: round $round/$rounds: baseline $baseline"
  # shellcheck disable=SC2086
  "$baseline" ${BENCH_ANALYZER_ARGS:-} | sed 's/"benchmark":"analyzer"/"benchmark":"analyzer-baseline"/' \
    | tee "$BENCH_WORK/analyzer-baseline.json"
  bench_log "analyzer: round $round/$rounds: this build"
  # shellcheck disable=SC2086
  "$BENCH_BIN/bench_analyzer" ${BENCH_ANALYZER_ARGS:-} | tee "$BENCH_WORK/analyzer-current.json"
  baseline_all+=("$(grep '"metric":"throughput"' "$BENCH_WORK/analyzer-baseline.json" | bench_json_number /dev/stdin value)")
  current_all+=("$(grep '"metric":"throughput"' "$BENCH_WORK/analyzer-current.json" | bench_json_number /dev/stdin value)")
done
# Best of the rounds (the least disturbed run of each) and median, side by side.
best_baseline=$(larger "${baseline_all[@]}")
best_current=$(larger "${current_all[@]}")
median_baseline=$(bench_median "${baseline_all[@]}")
median_current=$(bench_median "${current_all[@]}")
ratio() { awk -v c="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? c / b : 0) }'; }
base="\"baseline\":\"$(bench_json_escape "$baseline")\""
bench_emit analyzer throughput_best "$best_current" events/s null \
  "$base,\"baseline_value\":$best_baseline,\"ratio\":$(ratio "$best_current" "$best_baseline")"
bench_emit analyzer throughput_median "$median_current" events/s null \
  "$base,\"baseline_value\":$median_baseline,\"ratio\":$(ratio "$median_current" "$median_baseline")"
