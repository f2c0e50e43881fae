#!/usr/bin/env bash
# nflog: NFLOG receive+decode throughput of NflogSource, with ulogd2's NFLOG -> JSON as the
# same-traffic baseline, same run. Every run gets its own throwaway network namespace with lo
# up and this ruleset (loaded with nft -f):
#   iif "lo" udp dport 40000-49999 counter name "logged" log prefix "bh:enf:out:deny:c0bench01" group 10 drop
# in the input hook; bench_nflog's sender thread sends 16-byte UDP datagrams to 127.0.0.1
# with sendmmsg() as fast as it goes. Runs (bench_nflog, one namespace each):
#   ours-flood   NflogSource with the shipped defaults reads while BENCH_NFLOG_PACKETS
#                (1,000,000) packets are sent (bounded by 20 s)
#   ours-drain   BENCH_NFLOG_DRAIN_PACKETS (200,000) queued into a 512 MiB buffer first,
#                then drained: receive+decode capacity without the sender in the way
#   json-*       the same, also writing every event as a JSON line (like ulogd's JSON output)
#   ulogd-*      ulogd2 (NFLOG -> BASE -> IFINDEX -> IP2STR -> HWHDR -> JSON to a file),
#                run in the foreground by bench_nflog with a config generated here; for the
#                drain it is held with SIGSTOP while the packets queue
# Each run ends with one sentinel packet (closes the sequence accounting) and reads the
# rule's counter: unaccounted = counter - (delivered + rejected + counted lost), target 0.
# bench_nflog --report turns the results into the JSON lines.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_NFLOG_PACKETS=5000 BENCH_NFLOG_DRAIN_PACKETS=5000
BENCH_NAME=nflog
# shellcheck source=../kernel_lib.sh
. "$BENCH_DIR/kernel_lib.sh"

kbench_require nflog flood_events_per_s drain_events_per_s
packets=${BENCH_NFLOG_PACKETS:-1000000}
drain_packets=${BENCH_NFLOG_DRAIN_PACKETS:-200000}
dir=$BENCH_WORK/nflog
rm -rf "$dir"
mkdir -p "$dir"

cat >"$dir/setup.nft" <<'NFT'
table inet bhbench {
  counter logged { }
  chain input {
    type filter hook input priority 0; policy accept;
    iif "lo" udp dport 40000-49999 counter name "logged" log prefix "bh:enf:out:deny:c0bench01" group 10 drop
  }
}
NFT

# ulogd2: plugins from the Debian packages ulogd2 + ulogd2-json. Socket buffer as ours
# (8 MiB, growing to 64 MiB on ENOBUFS; 512 MiB for the drain), batching as ours
# (qthreshold 64, timeout 10 ms), sequence numbers on. JSON sync=0 (the plugin's default,
# its fastest; Debian's sample config says sync=1).
# ulogd2 is a benchmark-only dependency (bench/install-bench-deps.sh), installed on demand.
if ! command -v ulogd >/dev/null && [ "$(id -u)" = 0 ]; then
  "$BENCH_DIR/install-bench-deps.sh" >&2 || true
fi
ulogd_dir=""
for d in /usr/lib/x86_64-linux-gnu/ulogd /usr/lib/"$(uname -m)"-linux-gnu/ulogd /usr/lib/ulogd /usr/lib64/ulogd; do
  [ -f "$d/ulogd_output_JSON.so" ] && { ulogd_dir=$d; break; }
done
ulogd_problem=""
if ! command -v ulogd >/dev/null; then
  ulogd_problem="ulogd (Debian package ulogd2) not installed"
elif [ -z "$ulogd_dir" ]; then
  ulogd_problem="ulogd's JSON output plugin (Debian package ulogd2-json) not installed"
fi
ulogd_config() {  # FILE OUTPUT RCVBUF RCVBUF_MAX
  cat >"$1" <<CONF
[global]
logfile="$dir/ulogd.log"
loglevel=5
plugin="$ulogd_dir/ulogd_inppkt_NFLOG.so"
plugin="$ulogd_dir/ulogd_raw2packet_BASE.so"
plugin="$ulogd_dir/ulogd_filter_IFINDEX.so"
plugin="$ulogd_dir/ulogd_filter_IP2STR.so"
plugin="$ulogd_dir/ulogd_filter_HWHDR.so"
plugin="$ulogd_dir/ulogd_output_JSON.so"
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,mac2str1:HWHDR,json1:JSON

[log1]
group=10
unbind=0
seq_local=1
seq_global=1
netlink_socket_buffer_size=$3
netlink_socket_buffer_maxsize=$4
netlink_qthreshold=64
netlink_qtimeout=1

[json1]
file="$2"
sync=0
CONF
}

# run NAME ARGS...: one bench_nflog run in a fresh namespace; result in $dir/NAME.json, or
# the reason in $dir/NAME.skip.
run() {
  local name=$1 ns rc=0
  shift
  kbench_netns ns
  if ! ip netns exec "$ns" nft -f "$dir/setup.nft" 2>"$dir/$name.err"; then
    echo "the kernel cannot load the log rule: $(head -c 300 "$dir/$name.err")" >"$dir/$name.skip"
    kbench_netns_del "$ns"
    return 0
  fi
  bench_log "nflog: $name (namespace $ns)"
  timeout --foreground 120 ip netns exec "$ns" "$BENCH_BIN/bench_nflog" --netns "$ns" "$@" \
    >"$dir/$name.json" 2>"$dir/$name.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    bench_log "nflog: $name failed (exit $rc): $(tail -n 3 "$dir/$name.err")"
    echo "$name failed (exit $rc): $(tail -n 1 "$dir/$name.err")" >"$dir/$name.skip"
    rm -f "$dir/$name.json"
  else
    bench_log "nflog: $name: $(cat "$dir/$name.json")"
  fi
  rm -f "$dir"/*.out.json  # event output files are large
  kbench_netns_del "$ns"
}

run ours-flood --receiver ours --phase flood --packets "$packets"
run ours-drain --receiver ours --phase drain --packets "$drain_packets"
run json-flood --receiver ours --phase flood --packets "$packets" --json-out "$dir/json-flood.out.json"
run json-drain --receiver ours --phase drain --packets "$drain_packets" --json-out "$dir/json-drain.out.json"
if [ -z "$ulogd_problem" ]; then
  ulogd_config "$dir/ulogd-flood.conf" "$dir/ulogd-flood.out.json" 8388608 67108864
  # ulogd applies the buffer size only if it is below the maximum
  ulogd_config "$dir/ulogd-drain.conf" "$dir/ulogd-drain.out.json" 536870912 1073741824
  run ulogd-flood --receiver ulogd --phase flood --packets "$packets" \
    --ulogd-config "$dir/ulogd-flood.conf" --ulogd-output "$dir/ulogd-flood.out.json"
  run ulogd-drain --receiver ulogd --phase drain --packets "$drain_packets" \
    --ulogd-config "$dir/ulogd-drain.conf" --ulogd-output "$dir/ulogd-drain.out.json"
  for r in ulogd-flood ulogd-drain; do
    if [ -f "$dir/$r.skip" ] && [ -s "$dir/ulogd.log" ]; then
      echo "$(cat "$dir/$r.skip"); ulogd log: $(tail -n 2 "$dir/ulogd.log" | tr '\n' ' ')" >"$dir/$r.skip"
    fi
  done
else
  echo "$ulogd_problem" >"$dir/ulogd-flood.skip"
  echo "$ulogd_problem" >"$dir/ulogd-drain.skip"
fi
"$BENCH_BIN/bench_nflog" --report "$dir"
