# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/benchmarks/*.sh (sourced, not run).
#
# Contract of a benchmark script bench/benchmarks/<name>.sh:
#   * stdout: only JSON lines, one per figure, made with bench_emit / bench_skip;
#   * stderr: anything for humans;
#   * environment from run.sh: BULKHEAD_BUILD_DIR, BENCH_BIN (built executables),
#     BENCH_WORK (a scratch directory shared by the benchmarks of one run, removed after),
#     BENCH_DIR (bench/);
#   * exit 0 when it printed its figures (or a "skipped" line), non-zero on failure;
#   * a smoke size: one bench_smoke_size line (below) before it reads its size variables.

# bench_smoke_size VAR=VALUE...: the benchmark's size under `bench/run.sh --smoke` (CI's
# bench_smoke test): with BENCH_SMOKE=1 each VAR not already in the environment is set to
# VALUE and exported; otherwise nothing happens. Smoke sizes are small enough to finish in
# seconds and still go through every step (a smoke run checks that the benchmark works, its
# figures mean nothing). A benchmark that is fast as it is says so with no arguments.
# run.sh --smoke refuses a benchmark without this line, so a new one cannot slow CI unseen.
bench_smoke_size() {
  [ "${BENCH_SMOKE:-0}" = 1 ] || return 0
  local assignment name
  for assignment in "$@"; do
    name=${assignment%%=*}
    [ -n "${!name+set}" ] && continue
    printf -v "$name" '%s' "${assignment#*=}"
    export "${name?}"
  done
}

# bench_emit BENCHMARK METRIC VALUE UNIT TARGET [EXTRA]
#   TARGET "null" (or empty) for a figure without a target; EXTRA is raw JSON members
#   appended to the object, e.g. '"baseline":"full_load","baseline_value":12,"ratio":0.1'.
bench_emit() {
  local target=${5:-null}
  [ "$target" = null ] || target="\"$(bench_json_escape "$target")\""
  printf '{"benchmark":"%s","metric":"%s","value":%s,"unit":"%s","target":%s%s}\n' \
    "$1" "$2" "$3" "$4" "$target" "${6:+,$6}"
}

# bench_skip BENCHMARK METRIC REASON: the figure could not be measured here.
bench_skip() {
  printf '{"benchmark":"%s","metric":"%s","value":null,"unit":null,"target":null,"skipped":"%s"}\n' \
    "$1" "$2" "$(bench_json_escape "$3")"
}

bench_json_escape() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/ }
  printf '%s' "$s"
}

bench_log() { printf '%s\n' "$*" >&2; }

# bench_stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; reaps it. A gone PID is fine.
bench_stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# bench_median N1 N2 ...: the median (the middle value; the upper middle for an even count).
bench_median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int(NR / 2) + 1] }'
}

bench_min() {
  printf '%s\n' "$@" | sort -g | head -n 1
}

# bench_json_number FILE KEY: a number member of a one-line JSON object (no jq needed).
bench_json_number() {
  sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$1" | head -n 1
}
