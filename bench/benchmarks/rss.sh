#!/usr/bin/env bash
# rss: memory of the real daemon, bulkhead-enforcer, holding the ~100,000-element ruleset
# (the one apply loads). Started in a throwaway network namespace with the ruleset file,
# a scratch state directory and an event file, NFLOG on (groups 10 and 11, the defaults);
# once its ruleset_applied event and its "running" line are out (bounded wait), VmRSS and
# VmHWM are read from /proc/PID/status (after BENCH_RSS_SETTLE_S, 1 s, so the figure is the
# steady state), then it is stopped with SIGTERM (its "stopped" event is checked) and the
# namespace removed. Target: VmRSS < 30 MiB. Then bench_apply --memory-whatif (no kernel):
# the heap the parsed ruleset holds and the RSS after malloc_trim, for comparison.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_KERNEL_VDIS=500 BENCH_RSS_SETTLE_S=0.2
BENCH_NAME=rss
# shellcheck source=../kernel_lib.sh
. "$BENCH_DIR/kernel_lib.sh"

B=rss
kbench_require $B enforcer_vmrss enforcer_vmhwm
daemon=$BENCH_BIN/bulkhead-enforcer
if [ ! -x "$daemon" ]; then
  bench_skip $B enforcer_vmrss "bulkhead-enforcer was not built (enforcer/daemon missing)"
  exit 0
fi
ruleset=$(kbench_ruleset)
facts=$(dirname "$ruleset")/ruleset.facts.json
enforcer=$(sed -n 's/.*"enforcer":"\([^"]*\)".*/\1/p' "$facts")
elements=$(bench_json_number "$facts" elements)
dir=$BENCH_WORK/rss
rm -rf "$dir"
mkdir -p "$dir/state"
kbench_netns ns
bench_log "rss: bulkhead-enforcer --enforcer-id $enforcer with $elements elements in namespace $ns"

start=$(date +%s%N)
ip netns exec "$ns" "$daemon" --enforcer-id "$enforcer" --ruleset "$ruleset" --state-dir "$dir/state" \
  --events "$dir/events.jsonl" 2>"$dir/daemon.log" &
pid=$!  # ip netns exec execs the daemon: same process
stop_daemon() { bench_stop_pid "$pid"; }
trap 'stop_daemon; kbench_cleanup' EXIT

applied=""
for ((i = 0; i < 1200; i++)); do  # up to 120 s
  if grep -q '"type":"ruleset_applied"' "$dir/events.jsonl" 2>/dev/null && grep -q ' running' "$dir/daemon.log"; then
    applied=$(date +%s%N)
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    bench_log "rss: bulkhead-enforcer exited early: $(tail -n 5 "$dir/daemon.log")"
    exit 1
  fi
  sleep 0.1
done
if [ -z "$applied" ]; then
  bench_log "rss: no ruleset_applied event within 120 s: $(tail -n 5 "$dir/daemon.log")"
  exit 1
fi
sleep "${BENCH_RSS_SETTLE_S:-1}"
status=$(cat "/proc/$pid/status")
rss_kib=$(awk '/^VmRSS:/ { print $2 }' <<<"$status")
hwm_kib=$(awk '/^VmHWM:/ { print $2 }' <<<"$status")
anon_kib=$(awk '/^RssAnon:/ { print $2 }' <<<"$status")
latency_us=$(grep '"type":"ruleset_applied"' "$dir/events.jsonl" | head -n 1 | sed -n 's/.*"latency_us":\([0-9]*\).*/\1/p')
stop_daemon
if ! grep -q '"type":"stopped"' "$dir/events.jsonl"; then
  bench_log "rss: bulkhead-enforcer did not report a clean stop"
  exit 1
fi

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss=$(mib "$rss_kib")
hwm=$(mib "$hwm_kib")
met() { awk -v v="$1" 'BEGIN { print (v < 30 ? "true" : "false") }'; }
bench_emit $B ruleset_elements "$elements" elements null
bench_emit $B enforcer_vmrss "$rss" MiB "< 30 MiB" "\"met\":$(met "$rss")"
bench_emit $B enforcer_vmhwm "$hwm" MiB "< 30 MiB" "\"met\":$(met "$hwm")"
bench_emit $B enforcer_rss_anon "$(mib "$anon_kib")" MiB null
bench_emit $B enforcer_apply_latency "$(awk -v u="${latency_us:-0}" 'BEGIN { printf "%.1f", u / 1000 }')" ms null
bench_emit $B enforcer_start_to_applied "$(awk -v a="$applied" -v s="$start" 'BEGIN { printf "%.0f", (a - s) / 1e6 }')" ms null
# What-if (no kernel, not the daemon): the parsed ruleset alone, and RSS once glibc returns
# the freed parse buffers (malloc_trim) -- where a leaner daemon could land.
"$BENCH_BIN/bench_apply" --ruleset "$ruleset" --memory-whatif
