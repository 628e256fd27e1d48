#!/usr/bin/env bash
# Builds the tools the tests run from the Go module proxy into bin/tools/:
# promtool (`make test-rules`: promtool test rules on Keyward's alerts). No
# download site needed. A binary that is already there is not rebuilt, so a
# second run is a no-op. The versions are the ones in hack/tools/go.mod (its
# own module, so that Prometheus' server never enters Keyward's go.mod).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${TOOLS_DIR:-$root/bin/tools}"
mkdir -p "$out"

build() { # name package
  local name="$1" pkg="$2"
  if [ -x "$out/$name" ]; then
    echo "tools: $name present ($out/$name)"
    return
  fi
  echo "tools: building $name from $pkg (first build takes minutes) ..."
  local start=$SECONDS
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "tools: built $name in $((SECONDS - start))s"
}

build promtool github.com/prometheus/prometheus/cmd/promtool
echo "tools: ready in $out"
