#!/usr/bin/env bash
# Builds the Debian packages bulkhead-controller, bulkhead-enforcer and bulkheadctl the
# Debian way (debian/, debhelper, `dpkg-buildpackage -b`, Debian's own compiler flags) and
# checks them with lintian. The .debs land in $BULKHEAD_PACKAGE_DIR (default build/packages).
#
# The dashboard is built first (npm, as scripts/build.sh does): a package build runs no npm,
# and bulkhead-controller ships the built dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BULKHEAD_PACKAGE_DIR:-build/packages}

if [ ! -f webui/dist/index.html ] || [ -n "$(find webui/src webui/index.html webui/package.json -newer webui/dist/index.html -print -quit)" ]; then
  (cd webui && npm install --no-save --no-audit --no-fund --loglevel=error && npm run --silent build)
fi

# dpkg-buildpackage writes its results into the parent directory of the source tree: build in
# a scratch copy so that neither the repository nor its parent collects build products. A
# fixed path (and ccache, when installed) lets a rebuild reuse the compiler's cache: CMake
# takes CMAKE_CXX_COMPILER_LAUNCHER from the environment.
work=${TMPDIR:-/tmp}/bulkhead-packages
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bulkhead"
if command -v ccache >/dev/null; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$work
fi
git ls-files -z --cached --others --exclude-standard | grep -zv '^webui/dist/' \
  | xargs -0 cp --parents -t "$work/bulkhead"
cp -r webui/dist "$work/bulkhead/webui/dist"
(cd "$work/bulkhead" && dpkg-buildpackage -b -us -uc -j"$(nproc)")

mkdir -p "$out"
rm -f "$out"/bulkhead*.deb "$out"/bulkhead*.changes "$out"/bulkhead*.buildinfo
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out"/
if command -v lintian >/dev/null; then
  # --fail-on error,warning: a warning is a defect of the packaging, not noise.
  lintian --fail-on error,warning "$out"/*.changes
fi
ls -l "$out"/*.deb
