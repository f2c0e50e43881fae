#!/usr/bin/env bash
# Quick start, command 1: install what is needed, build, and run the demo.
#
# The demo is the lab of examples/lab: two hypervisors with three VDIs each, a file server,
# an admin terminal, an EDR server and a decoy, all network namespaces; the controller
# (SQLite, TLS on the lab's management network) and one enforcer per hypervisor. The
# example policy is uploaded and activated through the REST API, and the API serves on
# http://127.0.0.1:8080 until Ctrl-C, which tears everything down (namespaces, processes).
# The SOC dashboard is served at http://127.0.0.1:8080/ by the same controller.
set -euo pipefail
cd "$(dirname "$0")/.."

# BULKHEAD_DEMO_SKIP_BUILD=1 (tests/quickstart) runs the demo on binaries built already.
if [ "${BULKHEAD_DEMO_SKIP_BUILD:-0}" != 1 ]; then
  ./scripts/install-deps.sh
  # Only what the demo runs: the three programs and the dashboard. The tests and benchmarks
  # are built by command 2 (scripts/run-tests.sh), which builds everything.
  BULKHEAD_BUILD_TARGETS="bulkhead-controller bulkhead-enforcer bulkheadctl" BULKHEAD_BUILD_WEBUI=1 ./scripts/build.sh
fi
bin=${BULKHEAD_DEMO_BIN_DIR:-build/bin}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
lab=examples/lab/lab.py
state=${BULKHEAD_DEMO_STATE:-/run/bulkhead-demo}
# Where the demo lives; the defaults are the documented ones. tests/quickstart overrides them
# so that its run does not collide with a demo or another lab.
prefix=${BULKHEAD_DEMO_PREFIX:-bh-lab-}
api_listen=${BULKHEAD_DEMO_API_LISTEN:-127.0.0.1:8080}
lab_args=(--state-dir "$state" --prefix "$prefix")
up_args=(--api-listen "$api_listen" --controller-bin "$bin/bulkhead-controller" --enforcer-bin "$bin/bulkhead-enforcer")
[ -n "${BULKHEAD_DEMO_MGMT_NET:-}" ] && up_args+=(--mgmt-net "$BULKHEAD_DEMO_MGMT_NET")
[ -n "${BULKHEAD_DEMO_TLS_PORT:-}" ] && up_args+=(--tls-port "$BULKHEAD_DEMO_TLS_PORT")
api=http://$api_listen/api/v1

say "Validate the example policies (errors would name a JSON pointer)"
for e in vdi-pool segmentation host-mode lab; do
  "$bin/bulkheadctl" policy validate examples/$e/policy.json --inventory examples/$e/inventory.json
done

# The cleanup must finish whatever happened to our output: with `quickstart.sh | tee demo.log`
# Ctrl-C kills tee too, and a write to the closed pipe would kill this shell (SIGPIPE) or
# lab.py (BrokenPipeError) before the namespaces are gone. So: SIGPIPE ignored (a failed
# write is only an error), lab.py's output to a file first and copied to stdout, else stderr,
# else nowhere; lab.py in its own session, so a second Ctrl-C cannot interrupt it either.
cleanup() {
  trap - EXIT
  trap '' INT TERM PIPE HUP
  say "Stopping: controller, enforcers and every lab namespace" 2>/dev/null || true
  local out
  out=$(mktemp /tmp/bulkhead-demo-down.XXXXXX) || out=/dev/null
  setsid -w $lab down "${lab_args[@]}" </dev/null >"$out" 2>&1 || echo "lab down failed (exit $?)" >>"$out"
  cat "$out" 2>/dev/null || cat "$out" >&2 2>/dev/null || true
  [ "$out" = /dev/null ] || rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

say "Build the lab and start the controller and the enforcers"
$lab down "${lab_args[@]}" >/dev/null 2>&1 || true
$lab up "${lab_args[@]}" "${up_args[@]}"

token=$(cat "$state/tokens/lab-admin.token")
call() {  # call METHOD PATH [curl args...]: prints the body, fails on an HTTP error
  local method=$1 path=$2
  shift 2
  python3 - "$method" "$api$path" "$token" "$@" <<'PY'
import json, sys, urllib.request
method, url, token = sys.argv[1:4]
data = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else (b"" if method == "POST" else None)
req = urllib.request.Request(url, data=data, method=method,
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode(), file=sys.stderr)
    sys.exit(1)
PY
}

say "Upload and activate the lab policy (automatic quarantine on)"
revision=$(call POST /policies examples/lab/policy.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
call POST "/policies/$revision/activate" >/dev/null
for _ in $(seq 1 100); do
  in_sync=$(call GET /enforcers | python3 -c 'import json,sys; e=json.load(sys.stdin)["enforcers"]; print(sum(1 for x in e if x["in_sync"]), len(e))')
  [ "${in_sync% *}" = "${in_sync#* }" ] && break
  sleep 0.1
done
call GET /enforcers | python3 -c '
import json, sys
for e in json.load(sys.stdin)["enforcers"]:
    print("  enforcer %-4s generation %s applied, in sync: %s, last heartbeat %s" % (
        e["id"], e.get("applied_generation"), e["in_sync"], e["last_heartbeat"]))'

say "The demo is running"
cat <<TXT
Dashboard: http://$api_listen/   (sign in with the token in $state/tokens/lab-admin.token;
           $state/tokens/lab-soc.token for the SOC role)
API:       $api   (admin token: $state/tokens/lab-admin.token, soc: $state/tokens/lab-soc.token)
OpenAPI:   $api/openapi.json
Try (in another terminal, as root):
  # allowed: a VDI pings the file server; forbidden: VDI to VDI (dropped, logged)
  $lab exec ${lab_args[*]} vdi-001 -- ping -c1 -W1 10.0.0.30
  $lab exec ${lab_args[*]} vdi-001 -- ping -c1 -W1 10.1.1.1
  # a scan from vdi-002: drops -> incident -> automatic quarantine of vdi-002
  $lab exec ${lab_args[*]} vdi-002 -- nmap -sT -Pn -n -p 22,139,445,3389 10.1.0.0/30 10.1.1.0/30
  curl -s -H "Authorization: Bearer \$(cat $state/tokens/lab-soc.token)" $api/incidents
  curl -s -H "Authorization: Bearer \$(cat $state/tokens/lab-soc.token)" $api/quarantines
  curl -s -X DELETE -H "Authorization: Bearer \$(cat $state/tokens/lab-soc.token)" "$api/quarantines/vdi-002?wait_ms=2000"
  curl -sN -H "Authorization: Bearer \$(cat $state/tokens/lab-soc.token)" $api/stream     # live events
Ctrl-C stops the demo and removes the lab.
TXT
controller_pid=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["controller"]["pid"])' "$state/lab.json")
while kill -0 "$controller_pid" 2>/dev/null; do
  sleep 1
done
echo "the controller stopped; see $state/controller/controller.log" >&2
exit 1
