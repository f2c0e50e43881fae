#!/usr/bin/env bash
# webui: the SOC dashboard. Bundle size gzipped (app code, target < 500 KiB; the
# uPlot and Cytoscape chunks counted apart), time to first render against a local
# controller (sign-in page and the signed-in overview with its data, median of
# BENCH_WEBUI_RUNS (5) cold loads), and the live drop view's frame rate while a fake
# enforcer, enrolled through the API, uploads BENCH_WEBUI_RATE (5,000) events/s for
# BENCH_WEBUI_SECONDS (20) s (frames counted with requestAnimationFrame in the page).
# Headless Chromium (/usr/bin/chromium) driven by playwright-core from webui/node_modules.
set -euo pipefail
# shellcheck source=../lib.sh
. "$BENCH_DIR/lib.sh"
bench_smoke_size BENCH_WEBUI_RUNS=1 BENCH_WEBUI_SECONDS=2 BENCH_WEBUI_RATE=500

B=webui
REPO=$(dirname "$BENCH_DIR")
controller=$BENCH_BIN/bulkhead-controller
if [ ! -x "$controller" ]; then
  bench_skip $B bundle_app_gzip_kib "bulkhead-controller was not built"
  exit 0
fi
if [ ! -f "$REPO/webui/dist/index.html" ] || [ ! -d "$REPO/webui/node_modules/playwright-core" ]; then
  bench_skip $B bundle_app_gzip_kib "the web UI is not built (scripts/build.sh: npm install --no-save && npm run build in webui/)"
  exit 0
fi
if [ ! -x /usr/bin/chromium ] || ! command -v node >/dev/null; then
  bench_skip $B bundle_app_gzip_kib "needs node and /usr/bin/chromium (scripts/install-deps.sh)"
  exit 0
fi
port=${BENCH_WEBUI_PORT:-18582}
dir=$BENCH_WORK/webui
pid=""
stop_controller() {
  [ -n "$pid" ] || return 0
  bench_stop_pid "$pid"
  pid=""
}
trap stop_controller EXIT

rm -rf "$dir"
mkdir -p "$dir/data"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077; printf '{"tokens":[{"name":"bench-admin","role":"admin","token":"%s"}]}\n' "$token" >"$dir/tokens.json")
"$controller" --data-dir "$dir/data" --plain-listen "127.0.0.1:$port" --bootstrap-tokens "$dir/tokens.json" \
  --webui-dir "$REPO/webui/dist" 2>"$dir/controller.log" &
pid=$!
for ((i = 0; i < 100; i++)); do
  curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/controller.log" >&2; exit 1; }
  sleep 0.1
done
node "$BENCH_DIR/webui_bench.mjs" --url "http://127.0.0.1:$port" --admin-token "$token" --source-dir "$REPO" \
  --rate "${BENCH_WEBUI_RATE:-5000}" --seconds "${BENCH_WEBUI_SECONDS:-20}" --runs "${BENCH_WEBUI_RUNS:-5}" >"$dir/result.json"
stop_controller
r=$dir/result.json
kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }
num() { bench_json_number "$r" "$1"; }
bench_emit $B bundle_app_gzip_kib "$(kib "$(num bundle_app_gzip_bytes)")" KiB "< 500" \
  "\"raw_bytes\":$(num bundle_app_raw_bytes),\"note\":\"index.html, app JS and CSS; chart and graph libraries apart\""
bench_emit $B bundle_uplot_gzip_kib "$(kib "$(num bundle_uplot_gzip_bytes)")" KiB null
bench_emit $B bundle_cytoscape_gzip_kib "$(kib "$(num bundle_cytoscape_gzip_bytes)")" KiB null \
  "\"note\":\"loaded only by the incident view (dynamic import)\""
bench_emit $B first_render_sign_in_ms "$(num render_sign_in_ms)" ms null \
  "\"first_contentful_paint_ms\":$(num render_first_contentful_paint_ms),\"runs\":${BENCH_WEBUI_RUNS:-5}"
bench_emit $B first_render_overview_ms "$(num render_overview_ms)" ms "< 1000" \
  "\"what\":\"navigation to the signed-in overview with fleet and top lists rendered\""
bench_emit $B live_view_fps "$(num live_fps)" fps ">= 30" \
  "\"events_per_second_sent\":$(num live_sent_per_second),\"events_per_second_received\":$(num live_events_per_second_received),\"frame_p50_ms\":$(num live_frame_p50_ms),\"frame_p95_ms\":$(num live_frame_p95_ms),\"frame_max_ms\":$(num live_frame_max_ms),\"long_tasks\":$(num live_long_tasks),\"lost_messages\":$(num live_lost_messages),\"buffered_rows\":$(num live_buffered)"
