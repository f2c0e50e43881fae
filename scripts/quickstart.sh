#!/usr/bin/env bash
# Quick start, command 1: install what is needed, build, and run the main job.
#
# Until the controller lands (issue 4) the main job is the policy pipeline on the example
# policies: validate, compile per enforcer, show what quarantining a VDI changes, and
# prove the kernel accepts the compiled ruleset by loading it into a throwaway network
# namespace (removed again on exit, also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh

ctl=./build/bin/bulkheadctl
example=examples/vdi-pool
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Validate the example policies (errors would name a JSON pointer)"
for e in vdi-pool segmentation host-mode; do
  $ctl policy validate examples/$e/policy.json --inventory examples/$e/inventory.json
done

say "Compile $example for hypervisor hv1 (nft text, as loaded by 'nft -f')"
$ctl policy compile --policy $example/policy.json --inventory $example/inventory.json --enforcer hv1 \
  | sed -n '/chain forward/,/^\t}/p;/chain c.*_out {/,/^\t}/p'

say "Quarantine vdi-001: the element-level diff (one set element)"
$ctl policy diff $example/policy.json $example/policy.json --inventory $example/inventory.json \
  --enforcer hv1 --new-quarantine vdi-001

say "Load the compiled rulesets into a throwaway network namespace"
ns="bulkhead-quickstart-$$"
cleanup() { ip netns delete "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
for enforcer in hv1 hv2; do
  $ctl policy compile --policy $example/policy.json --inventory $example/inventory.json \
    --enforcer $enforcer | ip netns exec "$ns" nft -f -
  listing=$(ip netns exec "$ns" nft list table inet bulkhead)
  sets=$(grep -cE '^\s*(set|map) ' <<<"$listing")
  chains=$(grep -cE '^\s*chain ' <<<"$listing")
  echo "enforcer $enforcer: kernel accepted table inet bulkhead ($sets sets and maps, $chains chains)"
done

say "Done"
cat <<'TXT'
Try next:
  ./build/bin/bulkheadctl policy compile --policy examples/segmentation/policy.json \
      --inventory examples/segmentation/inventory.json --format json
  ./build/bin/bulkheadctl policy validate tests/corpus/policy/<any file>   # precise errors
  ./scripts/run-tests.sh                                                   # every test
TXT
