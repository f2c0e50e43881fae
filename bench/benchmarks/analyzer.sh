#!/usr/bin/env bash
# analyzer: detection-engine throughput on one core over 10,000,000 generated drop events
# from 10,000 sources (bench_analyzer prints the JSON lines itself: events/s against the
# 1,000,000 events/s target, engine state and peak RSS).
# Extra bench_analyzer options: BENCH_ANALYZER_ARGS (e.g. "--events 1000000").
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_ANALYZER_ARGS="--events 100000 --sources 1000"

if [ ! -x "$BENCH_BIN/bench_analyzer" ]; then
  bench_skip analyzer throughput "bench_analyzer is not built"
  exit 0
fi
# shellcheck disable=SC2086  # BENCH_ANALYZER_ARGS is a list of options
"$BENCH_BIN/bench_analyzer" ${BENCH_ANALYZER_ARGS:-}
