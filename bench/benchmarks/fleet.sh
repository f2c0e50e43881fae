#!/usr/bin/env bash
# fleet: one controller holding a fleet of simulated enforcers over TLS (bench_fleet with
# bench/fleet_simulator: the real protocol, no kernel). BENCH_FLEET_ENFORCERS (2,000)
# hypervisors carrying BENCH_FLEET_VDIS (100,000) VDIs from the fleet generator, its policy of
# BENCH_FLEET_SEGMENTS (200) segments and BENCH_FLEET_RULES (1,000) rules. Figures:
# time until every enforcer acked its first ruleset; the controller's RSS and threads holding
# them; /api/v1/health p99 over TLS meanwhile (target < 100 ms); policy change -> all acked
# p99 (target < 5 s); quarantine -> acked by its enforcer p99 (target < 10 ms); heartbeats
# absorbed during ingest and the ingest rate with the fleet as a ratio to ingest alone in the
# same run (target >= 0.9). Each phase ends at BENCH_FLEET_PHASE_SECONDS (120): what was not
# reached by then is reported as such (value -1 with the count reached).
# The controller runs with its default options (plus listeners, certificate and an admin
# token) on a fresh data directory; TLS on 127.0.0.1:BENCH_FLEET_TLS_PORT (18941), admin on
# 127.0.0.1:BENCH_FLEET_PLAIN_PORT (18491). Both processes get the hard file limit.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_FLEET_ENFORCERS=20 BENCH_FLEET_VDIS=400 BENCH_FLEET_QUARANTINES=3 \
  BENCH_FLEET_INGEST_EVENTS=4000 BENCH_FLEET_INGEST_ENFORCERS=2 BENCH_FLEET_PHASE_SECONDS=20 \
  BENCH_FLEET_ABUSE_STREAMS=20 BENCH_FLEET_ABUSE_SLOW=20

B=fleet
controller=$BENCH_BIN/bulkhead-controller
tool=$BENCH_BIN/bench_fleet
if [ ! -x "$controller" ] || [ ! -x "$tool" ]; then
  bench_skip $B policy_change_all_acked_p99 "bulkhead-controller or bench_fleet was not built"
  exit 0
fi
command -v openssl >/dev/null || { bench_skip $B policy_change_all_acked_p99 "openssl not installed"; exit 0; }
# Three connections per simulated enforcer on each side: the soft file limit (1,024) is far
# too low; the hard limit here is 20,000.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || bench_log "fleet: cannot raise the file limit (ulimit -n $(ulimit -n))"

tls_port=${BENCH_FLEET_TLS_PORT:-18941}
plain_port=${BENCH_FLEET_PLAIN_PORT:-18491}
dir=$BENCH_WORK/fleet
rm -rf "$dir"
mkdir -p "$dir/data"
pid=""
# BENCH_FLEET_CONTROLLER_LOG: where the controller logs (kept after the run), with
# BENCH_FLEET_CONTROLLER_LOG_LEVEL (warn) to see its timings at info.
controller_log=${BENCH_FLEET_CONTROLLER_LOG:-$dir/controller.log}
stop_controller() {
  [ -n "$pid" ] || return 0
  bench_stop_pid "$pid"
  pid=""
}
trap stop_controller EXIT

# A CA and a server certificate for localhost (what an enforcer pins at enrollment).
umask 077  # the keys, like the token file, readable by their owner only
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=bench-fleet-ca" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
  -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The controller refuses a token file other users can read.
(umask 077; printf '{"tokens":[{"name":"bench-admin","role":"admin","token":"%s"}]}\n' "$token" >"$dir/tokens.json")
"$controller" --data-dir "$dir/data" --listen "127.0.0.1:$tls_port" --tls-cert "$dir/server.crt" \
  --tls-key "$dir/server.key" --plain-listen "127.0.0.1:$plain_port" --bootstrap-tokens "$dir/tokens.json" \
  --log-level "${BENCH_FLEET_CONTROLLER_LOG_LEVEL:-warn}" 2>"$controller_log" &
pid=$!
for ((i = 0; i < 100; i++)); do
  curl -sf "http://127.0.0.1:$plain_port/api/v1/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$controller_log" >&2; exit 1; }
  sleep 0.1
done

# BENCH_FLEET_SIMULATOR_NICE=19 runs the simulator below the controller's CPU priority: on a
# machine where both share the cores, the controller's own latency shows (real enforcers
# apply on their own hosts).
timeout --foreground "${BENCH_FLEET_TIMEOUT:-1500}" nice -n "${BENCH_FLEET_SIMULATOR_NICE:-0}" "$tool" --tls-port "$tls_port" --plain-port "$plain_port" \
  --ca "$dir/ca.crt" --server-name localhost --admin-token "$token" --controller-pid "$pid" \
  --enforcers "${BENCH_FLEET_ENFORCERS:-2000}" --vdis "${BENCH_FLEET_VDIS:-100000}" \
  --segments "${BENCH_FLEET_SEGMENTS:-200}" --rules "${BENCH_FLEET_RULES:-1000}" \
  --departments "${BENCH_FLEET_DEPARTMENTS:-12}" --teams "${BENCH_FLEET_TEAMS:-96}" \
  --quarantines "${BENCH_FLEET_QUARANTINES:-200}" --ingest-events "${BENCH_FLEET_INGEST_EVENTS:-200000}" \
  --ingest-enforcers "${BENCH_FLEET_INGEST_ENFORCERS:-8}" --phase-seconds "${BENCH_FLEET_PHASE_SECONDS:-120}" \
  --abuse-streams "${BENCH_FLEET_ABUSE_STREAMS:-500}" --abuse-slow "${BENCH_FLEET_ABUSE_SLOW:-500}" \
  --hash-format "${BENCH_FLEET_HASH_FORMAT:-2}" --log-level "${BENCH_FLEET_LOG_LEVEL:-info}"
kill -0 "$pid" 2>/dev/null || { bench_log "fleet: the controller died"; tail -20 "$controller_log" >&2; exit 1; }
