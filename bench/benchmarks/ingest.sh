#!/usr/bin/env bash
# ingest: drop-event ingest rate through the controller's real API into SQLite (target
# >= 100,000 events/s). Starts bulkhead-controller on a fresh data directory with a
# plain loopback listener and an admin bootstrap token, then bench_ingest enrolls
# BENCH_INGEST_ENFORCERS (8) enforcers and has each upload its share of BENCH_INGEST_EVENTS
# (1,000,000) events in batches of BENCH_INGEST_BATCH (5,000: what the agent sends while it
# has a backlog, e.g. during a scan), one request at a time per enforcer as the agent does;
# a batch is answered after it is committed. Every event must
# be accepted exactly once and re-sent batches recognised as duplicates, else the benchmark
# fails. Best of BENCH_INGEST_REPS (2) runs, each on a fresh database.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_INGEST_EVENTS=20000 BENCH_INGEST_ENFORCERS=2 BENCH_INGEST_BATCH=1000 BENCH_INGEST_REPS=1

B=ingest
controller=$BENCH_BIN/bulkhead-controller
tool=$BENCH_BIN/bench_ingest
if [ ! -x "$controller" ] || [ ! -x "$tool" ]; then
  bench_skip $B events_per_second "bulkhead-controller or bench_ingest was not built"
  exit 0
fi
events=${BENCH_INGEST_EVENTS:-1000000}
enforcers=${BENCH_INGEST_ENFORCERS:-8}
batch=${BENCH_INGEST_BATCH:-5000}
reps=${BENCH_INGEST_REPS:-2}
port=${BENCH_INGEST_PORT:-18481}
dir=$BENCH_WORK/ingest
pid=""

stop_controller() {
  [ -n "$pid" ] || return 0
  bench_stop_pid "$pid"
  pid=""
}
trap stop_controller EXIT

best=0
best_line=""
rates=()
for ((rep = 1; rep <= reps; rep++)); do
  rm -rf "$dir"
  mkdir -p "$dir/data"
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077; printf '{"tokens":[{"name":"bench-admin","role":"admin","token":"%s"}]}\n' "$token" >"$dir/tokens.json")
  "$controller" --data-dir "$dir/data" --plain-listen "127.0.0.1:$port" \
    --bootstrap-tokens "$dir/tokens.json" 2>"$dir/controller.log" &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/controller.log" >&2; exit 1; }
    sleep 0.1
  done
  line=$("$tool" --port "$port" --admin-token "$token" --enforcers "$enforcers" --events "$events" --batch "$batch")
  bench_log "ingest run $rep: $line"
  stop_controller
  rate=$(printf '%s\n' "$line" | sed -n 's/.*"events_per_second":\([0-9.eE+-]*\).*/\1/p')
  rates+=("$(printf '%.0f' "$rate")")
  if awk -v a="$rate" -v b="$best" 'BEGIN { exit !(a > b) }'; then
    best=$rate
    best_line=$line
  fi
done
db_bytes=$(du -sb "$dir/data" | cut -f1)
seconds=$(printf '%s\n' "$best_line" | sed -n 's/.*"seconds":\([0-9.eE+-]*\).*/\1/p')
bench_emit $B events_per_second "$(printf '%.0f' "$best")" "events/s" ">= 100000" \
  "\"events\":$events,\"enforcers\":$enforcers,\"batch\":$batch,\"seconds\":$seconds,\"runs\":[$(IFS=,; echo "${rates[*]}")],\"store\":\"sqlite\",\"database_bytes\":$db_bytes"
