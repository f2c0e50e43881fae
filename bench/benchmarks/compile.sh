#!/usr/bin/env bash
# compile: whole-fleet compile time, per-host ruleset size, one-VDI-change diff size on a
# generated fleet of 10,000 VDIs / 50 hypervisors / 200 segments / 1,000 rules
# (bench_compile prints the JSON lines itself). Leaves the largest per-host ruleset and
# its one-VDI diff in $BENCH_WORK/compile/ for nft_load.
# Extra bench_compile options: BENCH_COMPILE_ARGS (e.g. "--reps 3").
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_COMPILE_ARGS="--vdis 1000 --hypervisors 5 --reps 1 --scale 500,1000"

out=$BENCH_WORK/compile
mkdir -p "$out"
# shellcheck disable=SC2086  # BENCH_COMPILE_ARGS is a list of options
"$BENCH_BIN/bench_compile" --nft-out "$out/largest.nft" --nft-diff-out "$out/one-vdi.nft" \
  ${BENCH_COMPILE_ARGS:-}
