#!/usr/bin/env bash
# bench/machine-facts.sh [BUILD_DIR]: the machine facts docs/benchmarks.md records next to
# its figures, as Markdown table rows.
set -euo pipefail
build=${1:-${BULKHEAD_BUILD_DIR:-$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")/build}}
row() { printf '| %s | %s |\n' "$1" "$2"; }
row "CPU" "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
row "cores (online)" "$(nproc)"
row "RAM" "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
row "virtualisation" "$(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor:[[:space:]]*//p' | head -n 1)"
row "kernel" "$(uname -r)"
row "distribution" "Debian $(cat /etc/debian_version 2>/dev/null || echo '?')"
row "nft" "$(nft --version 2>/dev/null || echo 'not installed')"
row "g++" "$(g++ --version | head -n 1)"
if [ -f "$build/CMakeCache.txt" ]; then
  type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")
  flags=$(sed -n "s/^CMAKE_CXX_FLAGS_$(echo "$type" | tr '[:lower:]' '[:upper:]'):STRING=//p" "$build/CMakeCache.txt")
  row "build type" "$type ($flags)"
fi
