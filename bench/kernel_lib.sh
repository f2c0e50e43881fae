# shellcheck shell=bash
# Helpers of the kernel benchmarks (bench/benchmarks/{apply,element_rate,nflog,rss}.sh),
# sourced after lib.sh. Not a benchmark itself (it is not in benchmarks/).
#
#   kbench_require NAME METRIC...   prints "skipped" lines and exits 0 unless root, nft and ip
#   kbench_netns VAR                creates a uniquely named network namespace (lo up) and
#                                   stores its name in VAR; every namespace made this way is
#                                   removed on exit (normal, error, INT/TERM), after killing
#                                   the processes left inside it (they can only be ours)
#   kbench_netns_del NAME           removes one of them now
# Programs run under `timeout --foreground`, so that Ctrl-C reaches them (plain timeout puts
# them in a process group of their own) and the INT trap then cleans up.
#
#   kbench_ruleset                  prints the path of the ~100,000-element ruleset JSON,
#                                   generated once per run into $BENCH_WORK/kernel/ (with
#                                   ruleset.facts.json: {"enforcer","elements","rules","sets"})

KBENCH_NETNS=()

kbench_require() {
  local name=$1 reason="" m
  shift
  if [ "$(id -u)" != 0 ]; then
    reason="needs root (network namespace, nf_tables, netlink)"
  elif ! command -v nft >/dev/null; then
    reason="nft not installed"
  elif ! command -v ip >/dev/null; then
    reason="ip (iproute2) not installed"
  fi
  if [ -n "$reason" ]; then
    for m in "$@"; do bench_skip "$name" "$m" "$reason"; done
    exit 0
  fi
}

kbench_netns_del() {
  local ns=$1 pid i
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
    sleep 0.1
  done
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}

kbench_cleanup() {
  local ns
  for ns in "${KBENCH_NETNS[@]}"; do kbench_netns_del "$ns"; done
  KBENCH_NETNS=()
}
trap kbench_cleanup EXIT
trap 'exit 130' INT TERM

kbench_netns() {
  local kb_name  # not "ns": the caller's variable may be called that
  kb_name="bulkhead-bench-${BENCH_NAME:-k}-$$-$RANDOM"
  ip netns add "$kb_name" || return 1
  KBENCH_NETNS+=("$kb_name")
  ip netns exec "$kb_name" ip link set lo up || return 1
  printf -v "$1" '%s' "$kb_name"
}

kbench_ruleset() {
  local dir=$BENCH_WORK/kernel
  mkdir -p "$dir"
  if [ ! -s "$dir/ruleset.json" ]; then
    bench_log "kernel benchmarks: generating the ~100,000-element ruleset"
    "$BENCH_BIN/bench_apply" --write-ruleset "$dir/ruleset.json.tmp" --write-facts "$dir/ruleset.facts.json" \
      --vdis "${BENCH_KERNEL_VDIS:-42240}" >&2
    mv "$dir/ruleset.json.tmp" "$dir/ruleset.json"
  fi
  printf '%s\n' "$dir/ruleset.json"
}
