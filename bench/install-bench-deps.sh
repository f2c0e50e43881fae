#!/usr/bin/env bash
# Debian packages only the benchmarks need, kept out of scripts/install-deps.sh so that
# installing Bulkhead never brings a second NFLOG daemon onto a host: ulogd2 + ulogd2-json
# are the same-run baseline of the nflog benchmark (run in a throwaway namespace with a
# generated config). The packaged ulogd2 service is stopped and disabled if systemd runs it.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-bench-deps: run as root" >&2; exit 2; }
missing=()
for p in ulogd2 ulogd2-json; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now ulogd2.service >/dev/null 2>&1 || true
  fi
fi
