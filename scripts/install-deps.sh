#!/usr/bin/env bash
# Installs everything Bulkhead needs to build, run the demo and run the tests, from
# Debian 12 packages only. Idempotent and non-interactive: re-running it is cheap.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (it calls apt-get)" >&2
  exit 2
fi

packages=(
  # build
  build-essential cmake pkg-config git ca-certificates
  # a rebuild of what did not change (CI runs a fresh clone each time) costs a cache lookup
  ccache
  # libraries named by the design
  libnftnl-dev libmnl-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev doctest-dev
  libsqlite3-dev libssl-dev
  # evidence archive segments are zstd-compressed (controller/archive)
  libzstd-dev
  # the SIEM export tests deliver to a real syslog receiver over TLS and UDP
  rsyslog rsyslog-openssl
  # simdjson: the controller parses event uploads with it (controller/services/event_batch.hpp)
  libsimdjson-dev
  # the enforcer's libvirt adapter reads libvirt's live domain XML (enforcer/ports)
  libxml2-dev
  # logging with levels for every program (common/logging)
  libspdlog-dev
  # the controller's /api/v1/metrics (Prometheus text format)
  prometheus-cpp-dev
  # Boost.Asio and Beast (headers): event-driven HTTP for thousands of enforcer connections
  # (the fleet benchmark's simulator)
  libboost-dev
  # openssl: the lab makes its CA and certificates with it
  openssl
  # kernel tooling: nft for the reference loads in tests/benchmarks, iproute2 for namespaces
  nftables iproute2 iputils-ping procps
  # /etc/protocols and /etc/services: nft resolves names like "icmp" or "ipv6-icmp" there,
  # and a minimal Debian install does not have them
  netbase
  # integration tests drive real traffic and read NFLOG from a small Python harness;
  # the schema test checks the documented JSON Schema against the examples
  python3 python3-jsonschema
  # the spoof guard's kernel test forges frames from a foreign MAC address
  python3-scapy
  # the demo and the end-to-end tests scan from a VDI with real nmap
  nmap curl
  # the dashboard's browser tests and benchmark drive Debian's Chromium (headless)
  chromium
  # the Debian packages (scripts/build-packages.sh) and their install test (tests/package:
  # debootstrap a Debian 12 root, boot it with systemd-nspawn)
  debhelper help2man lintian debootstrap systemd-container
)
# The dashboard (webui/) is built with npm (Vite, TypeScript): Debian 12 has Node 18. A
# Node.js that already brings npm (e.g. NodeSource's nodejs, which conflicts with Debian's
# npm package) is kept as it is.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
