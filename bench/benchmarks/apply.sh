#!/usr/bin/env bash
# apply: load a ~100,000-element ruleset into an empty nf_tables, two ways, in the same run
# and the same throwaway network namespace: NetlinkRulesetBackend::replace() (libnftnl batch,
# in-process) and `nft -f` of render_nft() of the same ruleset; interleaved, median of
# BENCH_APPLY_REPS (5) loads each, table deleted before every load. Ratio libnftnl / nft
# (target <= 0.5). Once, both tables are listed with `nft -j` and compared after
# normalisation (same_table_as_nft). bench_apply prints the JSON lines itself.
#
# The ruleset: the largest host of the generated fleet grown to 42,240 VDIs
# (BENCH_KERNEL_VDIS), about 100,000 elements, 2,067 rules, 1,611 sets; written once per run
# to $BENCH_WORK/kernel/ruleset.json and reused by element_rate and rss.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_KERNEL_VDIS=500 BENCH_APPLY_REPS=1
BENCH_NAME=apply
# shellcheck source=../kernel_lib.sh
. "$BENCH_DIR/kernel_lib.sh"

kbench_require apply netlink_replace_median replace_to_nft_ratio
ruleset=$(kbench_ruleset)
kbench_netns ns
bench_log "apply: namespace $ns"
timeout --foreground "${BENCH_APPLY_TIMEOUT:-600}" ip netns exec "$ns" "$BENCH_BIN/bench_apply" --netns "$ns" \
  --ruleset "$ruleset" --reps "${BENCH_APPLY_REPS:-5}" --work-dir "$BENCH_WORK/kernel"
