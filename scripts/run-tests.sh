#!/usr/bin/env bash
# Quick start, command 2 (and CI): install what is needed, build, run every test.
#   1. the normal build: unit tests, golden files, bad-input corpus, JSON Schema, and the
#      kernel tests in network namespaces (root);
#   2. an ASan/UBSan build running the unit tests and the bad-input corpus.
# Set BULKHEAD_SKIP_SANITIZERS=1 to skip step 2 while iterating.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh
(cd build && ctest --output-on-failure -j2)

if [ "${BULKHEAD_SKIP_SANITIZERS:-0}" != 1 ]; then
  # Only what the unit tests and the corpus run: the whole tree twice would double CI time.
  BULKHEAD_BUILD_DIR=build-asan BULKHEAD_BUILD_TARGETS="bulkhead_unit_tests bulkheadctl" \
    ./scripts/build.sh -DBULKHEAD_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  (cd build-asan && ctest --output-on-failure -j2 -L 'unit|corpus')
fi
