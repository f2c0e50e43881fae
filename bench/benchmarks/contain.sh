#!/usr/bin/env bash
# contain: time to contain, end to end in the namespace lab
# (examples/lab) with the real bulkhead-controller and bulkhead-enforcers over TLS:
#   * scan:  a VDI sends one UDP datagram to each of N distinct blocked targets (N = the
#            policy's incident.distinct_targets, 10); from the kernel timestamp of the N-th
#            drop (the one that completes the detection, as stored on the incident) to the
#            quarantine element in force on the VDI's hypervisor; p50/p99/max over
#            BENCH_CONTAIN_RUNS (100) runs; target p99 < 5 ms; with the budget per stage
#            (GET /api/v1/analyzer/containments: NFLOG delivery, enforcer, upload, store,
#            detect, record, quarantine, push, apply);
#   * decoy: one datagram to the decoy 10.0.0.66; from its drop's kernel timestamp; same;
#   * api:   POST /api/v1/quarantines -> element in force, BENCH_CONTAIN_API_RUNS (100) runs,
#            a new connection per request; target p99 < 3 ms; then the same on one kept-alive
#            connection (no target: what the client's connection set-up costs), and with
#            ?wait_ms=5000 (the round trip that returns once the enforcer acked);
#   * tripwire: the decoy as a tripwire; one datagram to it, then 200 pings to the file
#            server as fast as they go, BENCH_CONTAIN_TRIPWIRE_RUNS (10) runs: packets
#            through after the tripwire, target 0 (the same pings just before: all answered).
# "In force" = bench_contain_watch (nf_tables notifications, NFNLGRP_NFTABLES) in the
# hypervisor's namespace sees the element added to set quarantined_ports, CLOCK_REALTIME.
# The lab runs under prefix bhbench-, API 127.0.0.1:18381, management 10.254.79.0/24, TLS
# port 18643, state directory BENCH_CONTAIN_STATE (/tmp/bulkhead-bench-contain: a fixed path,
# so that a lab left by a killed run is torn down by the next one); it is torn down on every
# exit path. Needs root, ip, openssl, python3 (and nf_tables in the kernel).
# Driver: bench/contain_bench.py; details in docs/benchmarks.md ("Time to contain").
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
# Six detection runs of each kind: twelve automatic quarantines within a minute, more than
# the lab policy's default guardrail (max_per_minute 10), so a smoke run meets it too.
bench_smoke_size BENCH_CONTAIN_RUNS=6 BENCH_CONTAIN_API_RUNS=2 BENCH_CONTAIN_TRIPWIRE_RUNS=2

B=contain
REPO=$(dirname "$BENCH_DIR")
skip_all() {
  local m
  for m in contain_scan_p99 contain_decoy_p99 quarantine_api_to_in_force_p99; do bench_skip $B "$m" "$1"; done
  exit 0
}
[ "$(id -u)" = 0 ] || skip_all "needs root (network namespaces, nf_tables, netlink)"
for tool in ip python3 openssl; do
  command -v "$tool" >/dev/null || skip_all "$tool not installed"
done
for exe in bulkhead-controller bulkhead-enforcer bench_contain_watch; do
  [ -x "$BENCH_BIN/$exe" ] || skip_all "$exe was not built in $BENCH_BIN"
done

state=${BENCH_CONTAIN_STATE:-/tmp/bulkhead-bench-contain}
work=$BENCH_WORK/contain
mkdir -p "$work"
driver_pid=""
# The driver tears the lab down itself (also on SIGTERM); this trap passes INT/TERM on and
# waits for it, and as a last resort runs `lab.py down` for our prefix.
cleanup() {
  if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
  if [ -f "$state/lab.json" ] || ip netns list 2>/dev/null | grep -q '^bhbench-'; then
    python3 "$REPO/examples/lab/lab.py" down --purge --prefix bhbench- --state-dir "$state" >&2 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# BENCH_CONTAIN_ENFORCER_ARGS: more arguments for the lab's enforcers, e.g. "--port-discovery"
# (the packaged configuration's default; the lab's own default is without it).
enforcer_args=()
for a in ${BENCH_CONTAIN_ENFORCER_ARGS:-}; do
  enforcer_args+=("--enforcer-arg=$a")
done
timeout --foreground "${BENCH_CONTAIN_TIMEOUT:-600}" python3 "$BENCH_DIR/contain_bench.py" \
  --repo "$REPO" --bin-dir "$BENCH_BIN" --watch-bin "$BENCH_BIN/bench_contain_watch" --state-dir "$state" \
  --runs "${BENCH_CONTAIN_RUNS:-100}" --api-runs "${BENCH_CONTAIN_API_RUNS:-100}" \
  --tripwire-runs "${BENCH_CONTAIN_TRIPWIRE_RUNS:-10}" \
  --out "$work/samples.json" "${enforcer_args[@]}" >"$work/figures.tsv" &
driver_pid=$!
rc=0
wait "$driver_pid" || rc=$?
driver_pid=""
while IFS=$'\t' read -r metric value unit target extra; do
  bench_emit $B "$metric" "$value" "$unit" "$target" "$extra"
done <"$work/figures.tsv"
if [ -n "${BENCH_CONTAIN_SAMPLES:-}" ]; then
  cp "$work/samples.json" "$BENCH_CONTAIN_SAMPLES" 2>/dev/null || true
fi
exit "$rc"
