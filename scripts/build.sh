#!/usr/bin/env bash
# Configures and builds Bulkhead into build/ (or $BULKHEAD_BUILD_DIR). Extra arguments go
# to cmake's configure step, e.g. scripts/build.sh -DBULKHEAD_SANITIZE=ON.
# BULKHEAD_BUILD_TARGETS="a b" builds only those targets (the sanitizer pass and the demo need
# few); the dashboard is then built only with BULKHEAD_BUILD_WEBUI=1 (the demo serves it).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BULKHEAD_BUILD_DIR:-build}
# ccache when installed (scripts/install-deps.sh installs it; BULKHEAD_CCACHE=0 turns it off):
# CI builds a fresh clone in a new directory each time, so paths are taken relative to the
# checkout and the working directory is left out of the hash (debug information may then name
# the directory of the build that filled the cache).
launcher=()
if [ "${BULKHEAD_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# Warnings are errors here (development and CI); a distribution build leaves them warnings.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=${BULKHEAD_BUILD_TYPE:-RelWithDebInfo} -DBULKHEAD_WERROR=ON \
  "${launcher[@]}" "$@" >/dev/null
targets=()
for target in ${BULKHEAD_BUILD_TARGETS:-}; do
  targets+=(--target "$target")
done
cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}"

# The dashboard (webui/, served by the controller at /): `npm install --no-save` (the locked
# versions; never rewrites package.json or package-lock.json) when the lockfile is newer than
# the installed node_modules, `npm run build` (type check, then Vite into webui/dist) when a
# source is newer than the bundle. Nothing to do when nothing changed.
#
# `npm install`, not `npm ci`: the lockfile records Rollup's native package for the platforms
# the registry served when it was written; npm 11's `ci` refuses a lockfile without every
# platform's entry, Debian 12's npm 9 reads it either way. When the registry cannot be reached
# (an air-gapped build host, TLS egress the system does not trust) the dashboard is not built:
# the build says so and goes on, the controller answers / with a page saying how to build it,
# and the browser tests report themselves skipped. A failing type check or bundle still fails
# the build.
build_webui() {
  local w=webui
  if ! command -v npm >/dev/null; then
    echo "build: npm not found, the dashboard is not built (scripts/install-deps.sh installs it)" >&2
    return 0
  fi
  if [ ! -f $w/node_modules/.package-lock.json ] || [ $w/package-lock.json -nt $w/node_modules/.package-lock.json ]; then
    if ! (cd $w && npm install --no-save --no-audit --no-fund --loglevel=error); then
      echo "build: WARNING: npm could not install the dashboard's packages (see above); the dashboard is not built" >&2
      return 0
    fi
    touch $w/node_modules/.package-lock.json
  fi
  if [ ! -f $w/dist/index.html ] || [ -n "$(find $w/src $w/index.html $w/package.json $w/package-lock.json \
      $w/vite.config.ts $w/tsconfig.json -newer $w/dist/index.html -print -quit)" ]; then
    (cd $w && npm run --silent build)
  fi
}
if [ -z "${BULKHEAD_BUILD_TARGETS:-}" ] || [ "${BULKHEAD_BUILD_WEBUI:-0}" = 1 ]; then
  build_webui
fi
