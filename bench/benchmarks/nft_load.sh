#!/usr/bin/env bash
# nft_load: load the largest per-host ruleset of the compile benchmark's fleet with
# `nft -f` in a throwaway network namespace and time it (wall clock of the nft process:
# parse + netlink + kernel commit; user and system CPU reported apart, system being the
# kernel's share). Each load replaces the table atomically (the script is
# "table; delete table; table { … }"). Same run baseline: the one-VDI change applied as an
# element diff (render_nft_diff) against that loaded table, compared with the full reload.
#
# Needs root, nft and ip; otherwise prints "skipped" lines. BENCH_NFT_LOADS (3) loads are
# timed; BENCH_NFT_TIMEOUT (900 s) bounds each nft run. Reuses $BENCH_WORK/compile/ when
# the compile benchmark ran first; otherwise generates the ruleset itself.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_NFT_LOADS=1

B=nft_load
loads=${BENCH_NFT_LOADS:-3}
limit=${BENCH_NFT_TIMEOUT:-900}

skip_all() {
  bench_skip $B full_load "$1"
  bench_skip $B one_vdi_diff_apply "$1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip_all "needs root (network namespace and nft)"
command -v nft >/dev/null || skip_all "nft not installed"
command -v ip >/dev/null || skip_all "ip (iproute2) not installed"

dir=$BENCH_WORK/compile
if [ ! -s "$dir/largest.nft" ] || [ ! -s "$dir/one-vdi.nft" ] || [ ! -s "$dir/largest.nft.json" ]; then
  dir=$BENCH_WORK/nft_load
  mkdir -p "$dir"
  bench_log "nft_load: generating the fleet's largest per-host ruleset"
  "$BENCH_BIN/bench_compile" --emit-only --nft-out "$dir/largest.nft" --nft-diff-out "$dir/one-vdi.nft" >&2
fi
full=$dir/largest.nft
diff=$dir/one-vdi.nft
facts=$dir/largest.nft.json

ns=bulkhead-bench-$$-$RANDOM
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$ns" 2>/dev/null || skip_all "cannot create a network namespace"
if ! ip netns exec "$ns" nft list tables >/dev/null 2>&1; then
  skip_all "nft does not run in a network namespace here"
fi

# timed_nft FILE: runs nft -f FILE in the namespace; prints "wall_ms user_ms sys_ms".
timed_nft() {
  local times=$BENCH_WORK/nft-time.$$ err=$BENCH_WORK/nft-err.$$ rc=0
  local TIMEFORMAT='%3R %3U %3S'
  { time timeout "$limit" ip netns exec "$ns" nft -f "$1" >/dev/null 2>"$err"; } 2>"$times" || rc=$?
  if [ "$rc" -ne 0 ]; then
    bench_log "nft_load: nft -f $1 failed (exit $rc):"
    head -n 20 "$err" >&2
    return 1
  fi
  awk '{ printf "%.1f %.1f %.1f\n", $1 * 1000, $2 * 1000, $3 * 1000 }' "$times"
}

bench_log "nft_load: $(bench_json_number "$facts" elements) elements, $(bench_json_number "$facts" rules) rules, $(wc -c <"$full") bytes of nft script; namespace $ns"
walls=() users=() syss=() diffs=()
for ((i = 1; i <= loads; i++)); do
  read -r wall user sys < <(timed_nft "$full") || exit 1
  [ -n "${wall:-}" ] || exit 1
  bench_log "  full load $i/$loads: ${wall} ms (user ${user}, sys ${sys})"
  walls+=("$wall") users+=("$user") syss+=("$sys")
done
if ! ip netns exec "$ns" nft list table inet bulkhead >/dev/null 2>&1; then
  bench_log "nft_load: table inet bulkhead missing after load"
  exit 1
fi
for ((i = 1; i <= loads; i++)); do
  timed_nft "$full" >/dev/null || exit 1  # back to the old state, untimed
  read -r wall _ _ < <(timed_nft "$diff") || exit 1
  [ -n "${wall:-}" ] || exit 1
  bench_log "  one-VDI diff $i/$loads: ${wall} ms"
  diffs+=("$wall")
done

full_ms=$(bench_median "${walls[@]}")
diff_ms=$(bench_median "${diffs[@]}")
ratio=$(awk -v d="$diff_ms" -v f="$full_ms" 'BEGIN { printf "%.4f", (f > 0 ? d / f : 0) }')
bench_emit $B ruleset_elements "$(bench_json_number "$facts" elements)" elements null
bench_emit $B ruleset_rules "$(bench_json_number "$facts" rules)" rules null
bench_emit $B full_load_median "$full_ms" ms null
bench_emit $B full_load_best "$(bench_min "${walls[@]}")" ms null
bench_emit $B full_load_user_cpu_median "$(bench_median "${users[@]}")" ms null
bench_emit $B full_load_sys_cpu_median "$(bench_median "${syss[@]}")" ms null
bench_emit $B one_vdi_diff_elements "$(bench_json_number "$facts" diff_elements)" elements null
bench_emit $B one_vdi_diff_apply_median "$diff_ms" ms null \
  "\"baseline\":\"full_load_median\",\"baseline_value\":$full_ms,\"ratio\":$ratio"
