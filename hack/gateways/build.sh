#!/usr/bin/env bash
# Builds the real gateways the verifier's end-to-end tests run (test/verify,
# docs/gateways.md) from the Go module proxy into bin/gateways/: Caddy
# (forward_auth). No download site needed. A binary that is already there is
# not rebuilt, so a second run is a no-op. NGINX comes from Debian (.ci/run).
#
# Traefik is not built: github.com/traefik/traefik/v3 (v3.7.13) needs module
# versions the Go module proxy does not serve (DNS-provider SDKs of its ACME
# client, e.g. github.com/nrdcg/oci-go-sdk/common/v1065 v1065.124.0: "403
# Forbidden, This module version is not available"); see docs/gateways.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${GATEWAYS_DIR:-$root/bin/gateways}"
mkdir -p "$out"

build() { # name module-dir package
  local name="$1" dir="$2" pkg="$3"
  if [ -x "$out/$name" ]; then
    echo "gateways: $name present ($out/$name)"
    return
  fi
  echo "gateways: building $name from $pkg ..."
  local start=$SECONDS
  (cd "$here/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "gateways: built $name in $((SECONDS - start))s"
}

# The version is the one in hack/gateways/caddy/go.mod.
build caddy caddy github.com/caddyserver/caddy/v2/cmd/caddy
echo "gateways: ready in $out"
