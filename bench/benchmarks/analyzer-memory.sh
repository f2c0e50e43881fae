#!/usr/bin/env bash
# analyzer-memory: the analyzer engine's memory over a simulated day and the cost of its
# checkpoints (bench_analyzer --mode memory, then --mode checkpoint; docs/benchmarks.md).
#   memory:     24 simulated hours of drops from 10,000 sources, incidents resolved every 10
#               simulated minutes, 5 % of the sources replaced each hour; memory_bytes() and
#               VmRSS every simulated hour, and their growth after warm-up (must stay flat)
#   checkpoint: save_state size and time, restore_state time at 10,000 active sources
# Sizes: BENCH_ANALYZER_MEMORY_HOURS (24), BENCH_ANALYZER_MEMORY_EVENTS_PER_HOUR (500000),
# BENCH_ANALYZER_CHECKPOINT_EVENTS (2000000); BENCH_SMOKE=1 shrinks all three (a quick check
# that the benchmark runs, figures not meaningful).
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_ANALYZER_MEMORY_HOURS=3 BENCH_ANALYZER_MEMORY_EVENTS_PER_HOUR=50000 \
  BENCH_ANALYZER_CHECKPOINT_EVENTS=200000

if [ ! -x "$BENCH_BIN/bench_analyzer" ]; then
  bench_skip analyzer-memory memory "bench_analyzer is not built"
  exit 0
fi
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  hours=${BENCH_ANALYZER_MEMORY_HOURS:-3}
  per_hour=${BENCH_ANALYZER_MEMORY_EVENTS_PER_HOUR:-50000}
  checkpoint_events=${BENCH_ANALYZER_CHECKPOINT_EVENTS:-200000}
else
  hours=${BENCH_ANALYZER_MEMORY_HOURS:-24}
  per_hour=${BENCH_ANALYZER_MEMORY_EVENTS_PER_HOUR:-500000}
  checkpoint_events=${BENCH_ANALYZER_CHECKPOINT_EVENTS:-2000000}
fi
"$BENCH_BIN/bench_analyzer" --mode memory --hours "$hours" --events-per-hour "$per_hour"
"$BENCH_BIN/bench_analyzer" --mode checkpoint --events "$checkpoint_events"
