#!/usr/bin/env bash
# The issuance table of docs/benchmarks.md, as a user would measure it: against the
# embedded local control plane of `make local` (bin/keyward-local, manager
# defaults), create N AccessKeys in one namespace with one `kubectl create
# -f`, and time until a `kubectl get` sees every one Active (a key turns
# Active only after its Secret is written). One Application with room for
# all, the tenant switched on. Prints one Markdown row per N and run.
#
#   test/bench/issuance-table.sh [runs] [N...]   (default: 3 runs of 100, 300, 1000)
#   make bench-table BENCH_TABLE_ARGS="1 100 1000"
#
# Its control plane is its own (bin/issuance-table, started afresh), but it
# listens on make local's ports, so stop a running `make local` first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-3}
shift || true
sizes=("${@:-100 300 1000}")
read -r -a sizes <<<"${sizes[*]}"

kubectl=$(ls -d bin/k8s/*/kubectl | tail -1)
# A fresh control plane of its own, not make local's bin/local.
export KEYWARD_LOCAL_DIR=bin/issuance-table
rm -rf "$KEYWARD_LOCAL_DIR"
k() { "$kubectl" --kubeconfig "$KEYWARD_LOCAL_DIR/kubeconfig" "$@"; }
go build -o bin/keyward-local ./hack/local
log=bin/issuance-table.log # outside KEYWARD_LOCAL_DIR, which hack/local creates
bin/keyward-local >"$log" 2>&1 &
local_pid=$!
cleanup() {
  kill $local_pid 2>/dev/null
  wait $local_pid 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 600); do
  curl -fs http://127.0.0.1:8081/readyz >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs http://127.0.0.1:8081/readyz >/dev/null || { echo "the manager did not get ready (see $log)"; exit 1; }

# The manager's CPU time (user + system, in clock ticks), from /proc.
manager_pid=$(pgrep -P $local_pid -x manager | head -1)
ticks=$(getconf CLK_TCK)
manager_cpu() { awk '{print $14 + $15}' "/proc/$manager_pid/stat"; }

echo "| N keys | run | kubectl create -f | all Active (from the create) | keys/s | manager CPU per key |"
echo "|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  for run in $(seq 1 "$runs"); do
    ns="table-$n-$run"
    dir=$(mktemp -d)
    k create namespace "$ns" >/dev/null
    k apply -f - >/dev/null <<YAML
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default, namespace: $ns}
spec: {apiKeysEnabled: true, maxKeysPerOwner: $n, maxKeys: $n}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: billing, namespace: $ns}
spec: {maxAccessKeys: $n}
YAML
    for i in $(seq 1 "$n"); do
      printf 'apiVersion: keyward.dev/v1alpha1\nkind: AccessKey\nmetadata: {name: key-%05d, namespace: %s}\nspec: {application: billing}\n---\n' "$i" "$ns"
    done >"$dir/keys.yaml"
    # The clock starts once the manager has taken in the tenant and Application.
    k wait application/billing -n "$ns" --for=condition=Ready --timeout=1m >/dev/null
    t0=$(date +%s.%N)
    cpu0=$(manager_cpu)
    k create -f "$dir/keys.yaml" >/dev/null
    t1=$(date +%s.%N)
    # One list every 0.2 s (kubectl wait --all would wait for one key after
    # another, two requests each, and measure kubectl instead).
    until [ "$(k get accesskeys -n "$ns" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c '^Active$')" -eq "$n" ]; do
      sleep 0.2
    done
    t2=$(date +%s.%N)
    cpu1=$(manager_cpu)
    awk -v n="$n" -v r="$run" -v a="$t0" -v b="$t1" -v c="$t2" -v cpu=$((cpu1 - cpu0)) -v hz="$ticks" \
      'BEGIN { printf "| %d | %d | %.1f s | %.1f s | %.1f | %.2f ms |\n", n, r, b-a, c-a, n/(c-a), 1000*cpu/hz/n }'
    rm -rf "$dir"
  done
done
