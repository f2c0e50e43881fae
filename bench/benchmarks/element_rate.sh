#!/usr/bin/env bash
# element_rate: element changes on a loaded ~100,000-element table through
# NetlinkRulesetBackend::apply_diff(), against `nft -f` of the same diff (render_nft_diff),
# same run, same throwaway network namespace (bench_element_rate prints the JSON lines):
#   * quarantine-style single-element changes: 1,000 successive apply_diff() calls (500 add
#     one interface to quarantined_ports, 500 remove them); elements/s, latency p50/p99;
#     the backend's own ApplyStats::latency; the same transactions on one kept-open socket
#     (what-if); baseline: 20 of the same diffs through `nft -f`;
#   * the same kind of change through apply_element_changes(), bursts of
#     BENCH_QUARANTINE_BURST (1,000) changes per call (adds, then their removal), 3 times,
#     in both modes: quarantine_pipelined_* (strict: one transaction per change, pipelined
#     with sendmmsg) and quarantine_coalesced_* (group commit: one transaction per burst);
#     quarantine_elements_per_s stays the serial apply_diff() reference;
#   * 10,000-element diffs: 10,000 addresses added to and removed from the shared segment
#     set seg_vdi_4 (42,240 elements), 3 times; baseline `nft -f` of the same diffs (nft's
#     removal gets one attempt bounded by BENCH_NFT_REMOVE_TIMEOUT (10 s), then a 50-element
#     sample); BENCH_ELEMENT_BULK (10,000) addresses, BENCH_ELEMENT_REPS (3) times.
# Target >= 200,000 elements/s.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_KERNEL_VDIS=500 BENCH_QUARANTINE_CHANGES=20 BENCH_QUARANTINE_BURST=20 BENCH_NFT_CHANGES=2 \
  BENCH_ELEMENT_BULK=200 BENCH_ELEMENT_REPS=1
BENCH_NAME=element_rate
# shellcheck source=../kernel_lib.sh
. "$BENCH_DIR/kernel_lib.sh"

kbench_require element_rate quarantine_elements_per_s bulk_add_elements_per_s
ruleset=$(kbench_ruleset)
kbench_netns ns
bench_log "element_rate: namespace $ns"
timeout --foreground "${BENCH_ELEMENT_RATE_TIMEOUT:-600}" ip netns exec "$ns" "$BENCH_BIN/bench_element_rate" \
  --netns "$ns" --ruleset "$ruleset" --work-dir "$BENCH_WORK/kernel" \
  --changes "${BENCH_QUARANTINE_CHANGES:-1000}" --burst "${BENCH_QUARANTINE_BURST:-1000}" --nft-changes "${BENCH_NFT_CHANGES:-20}" \
  --bulk "${BENCH_ELEMENT_BULK:-10000}" --reps "${BENCH_ELEMENT_REPS:-3}" \
  --nft-timeout "${BENCH_NFT_REMOVE_TIMEOUT:-10}" --nft-remove-sample 50
