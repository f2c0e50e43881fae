#!/usr/bin/env bash
# evidence (issue 16): export rate to a real rsyslogd over TLS (target >= 100,000 records/s),
# bytes per drop event in the hot tier, and the archive's write, scan and verify rates and
# bytes per event archived (verify target >= 1,000,000 records/s, archived <= 32 bytes/event).
#
# Export: bench/evidence_bench.py stores BENCH_EVIDENCE_EVENTS (200,000) drop events through
# the controller's API while its TLS destination's receiver is down, then starts Debian's
# rsyslogd (imtcp + ossl driver, loopback, free ports) and restarts the controller: the rate is
# the events over the time from the controller's health answer until rsyslogd has written
# every message (each stable id once); best of BENCH_EVIDENCE_REPS (3) runs from the same
# stored backlog (a copy of the data directory). Once for each format of
# BENCH_EVIDENCE_FORMATS ("leef ocsf cef"; BENCH_EVIDENCE_FORMAT, one format, still works),
# the same backlog each time: one figure export_tls_<format>_records_per_second per format.
# Hot bytes per event: the data directory (SQLite, indexes, drops hash chain) over the events.
# Archive: archive_bench seals BENCH_EVIDENCE_ARCHIVE_EVENTS (500,000) generated drops into a
# segment (zstd 19, Merkle root signed with Ed25519), scans and verifies it; rates per CPU
# second of the process (the machine is shared) and per wall second.
# Verify: `bulkheadctl evidence verify` over that store afterwards (every chain record and the
# checkpoints), records per wall second (target >= 1,000,000 records/s).
# Needs rsyslog, rsyslog-openssl and openssl for the export figures (skipped without them).
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_EVIDENCE_EVENTS=5000 BENCH_EVIDENCE_ARCHIVE_EVENTS=20000 BENCH_EVIDENCE_REPS=1

B=evidence
controller=$BENCH_BIN/bulkhead-controller
archive=$BENCH_BIN/archive_bench
events=${BENCH_EVIDENCE_EVENTS:-200000}
archive_events=${BENCH_EVIDENCE_ARCHIVE_EVENTS:-500000}
formats=${BENCH_EVIDENCE_FORMATS:-${BENCH_EVIDENCE_FORMAT:-leef ocsf cef}}
reps=${BENCH_EVIDENCE_REPS:-3}
work=$BENCH_WORK/evidence
rm -rf "$work"
mkdir -p "$work"

num() {  # NAME JSON: the number member NAME of a one-line JSON object
  printf '%s\n' "$2" | sed -n "s/.*\"$1\": *\([0-9.eE+-]*\).*/\1/p"
}

skip_exports() {  # REASON: one skipped figure per format
  local format
  for format in $formats; do
    bench_skip $B "export_tls_${format}_records_per_second" "$1"
  done
}

if [ ! -x "$controller" ]; then
  skip_exports "bulkhead-controller was not built"
elif [ ! -x /usr/sbin/rsyslogd ] || [ ! -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so ] || ! command -v openssl >/dev/null; then
  skip_exports "rsyslog, rsyslog-openssl or openssl not installed"
else
  # shellcheck disable=SC2086  # one argument per format
  lines=$(python3 "$BENCH_DIR/evidence_bench.py" --controller "$controller" --work "$work/export" \
           --events "$events" --formats $formats --reps "$reps" --bulkheadctl "$BENCH_BIN/bulkheadctl")
  receiver="rsyslogd $(/usr/sbin/rsyslogd -v | sed -n '1s/^rsyslogd *\([^ ]*\).*/\1/p')"
  for format in $formats; do
    line=$(printf '%s\n' "$lines" | grep -F "\"format\": \"$format\"")
    bench_log "evidence export, $format: $line"
    rate=$(num records_per_second "$line")
    bench_emit $B "export_tls_${format}_records_per_second" "$rate" "records/s" ">= 100000" \
      "\"transport\":\"tls\",\"controller_cpu_seconds\":$(num controller_cpu_seconds "$line"),\"rsyslogd_cpu_seconds\":$(num rsyslogd_cpu_seconds "$line"),\"receiver\":\"$receiver\",\"format\":\"$format\",\"events\":$events,\"seconds\":$(num export_seconds "$line"),\"bytes_received\":$(num bytes_received "$line"),\"duplicates\":$(num duplicates "$line"),\"runs\":$(printf '%s\n' "$line" | sed -n 's/.*"runs": *\(\[[0-9, ]*\]\).*/\1/p' | tr -d ' '),\"ratio_to_target\":$(awk -v r="$rate" 'BEGIN { printf "%.2f", r / 100000 }')"
  done
  # The last line: the store's figures, measured once whatever the formats.
  line=$(printf '%s\n' "$lines" | tail -n 1)
  bench_log "evidence store: $line"
  bench_emit $B hot_bytes_per_event "$(num hot_bytes_per_event "$line")" "bytes/event" null \
    "\"events\":$events,\"data_dir_bytes\":$(num hot_bytes "$line"),\"store\":\"sqlite\""
  vrate=$(num verify_records_per_second "$line")
  bench_emit $B store_verify_records_per_second "$vrate" "records/s" ">= 1000000" \
    "\"tool\":\"bulkheadctl evidence verify\",\"records\":$(num verify_records "$line"),\"checkpoints\":$(num verify_checkpoints "$line"),\"seconds\":$(num verify_seconds "$line"),\"cpu_seconds\":$(num verify_cpu_seconds "$line"),\"ratio_to_target\":$(awk -v r="$vrate" 'BEGIN { printf "%.2f", r / 1000000 }')"
fi

if [ ! -x "$archive" ]; then
  bench_skip $B archive_write_events_per_cpu_second "archive_bench was not built (BULKHEAD_BENCH=ON)"
  exit 0
fi
out=$("$archive" "$archive_events")
bench_log "$out"
rate_of() {  # STAGE COLUMN(1 cpu, 2 wall)
  printf '%s\n' "$out" | awk -v s="$1" -v c="$2" '$1 == s { print (c == 1 ? $2 : $4) }'
}
per_event=$(printf '%s\n' "$out" | sed -n 's/.* = \([0-9.]*\) bytes\/event.*/\1/p')
segment=$(printf '%s\n' "$out" | sed -n 's/.*segment \([0-9]*\) bytes.*/\1/p')
for stage in write scan verify; do
  target=null
  extra="\"events\":$archive_events,\"wall_events_per_second\":$(rate_of $stage 2)"
  if [ $stage = verify ]; then
    target=">= 1000000"
    extra="$extra,\"ratio_to_target\":$(awk -v r="$(rate_of verify 1)" 'BEGIN { printf "%.2f", r / 1000000 }')"
  fi
  bench_emit $B "archive_${stage}_events_per_cpu_second" "$(rate_of $stage 1)" "events/CPU-s" "$target" "$extra"
done
bench_emit $B archived_bytes_per_event "$per_event" "bytes/event" "<= 32" \
  "\"events\":$archive_events,\"segment_bytes\":$segment,\"zstd_level\":19,\"ratio_to_target\":$(awk -v r="$per_event" 'BEGIN { printf "%.2f", r / 32 }')"
