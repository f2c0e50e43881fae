#!/usr/bin/env bash
# Configures and builds Bulkhead into build/ (or $BULKHEAD_BUILD_DIR). Extra arguments go
# to cmake's configure step, e.g. scripts/build.sh -DBULKHEAD_SANITIZE=ON.
# BULKHEAD_BUILD_TARGETS="a b" builds only those targets (the sanitizer pass needs few).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BULKHEAD_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=${BULKHEAD_BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
targets=()
for target in ${BULKHEAD_BUILD_TARGETS:-}; do
  targets+=(--target "$target")
done
cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}"
