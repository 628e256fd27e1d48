#!/usr/bin/env bash
# Builds the test node's images FROM scratch from Go binaries with podman and
# writes them as OCI archives into bin/node/images/ (imported into the node's
# containerd with `ctr -n k8s.io images import`; nothing is pulled):
#   localhost/keyward/pause:node     the sandbox image (test/harness/node/images/pause)
#   localhost/keyward/keyprobe:node  the suite's workload (test/node/keyprobe)
# An archive that is newer than its sources is not rebuilt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. hack/image/lib.sh

out=bin/node/images
mkdir -p "$out"
image() { # name package
  local name="$1" pkg="$2" archive="$out/$1.tar"
  if [ -f "$archive" ] && [ -z "$(find "$pkg" -newer "$archive" -name '*.go' | head -1)" ]; then
    echo "node images: $name present ($archive)"
    return
  fi
  local ctx; ctx=$(mktemp -d "$out/.ctx.XXXXXX")
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$ctx/$name" "./$pkg"
  printf 'FROM scratch\nCOPY %s /%s\nENTRYPOINT ["/%s"]\n' "$name" "$name" "$name" >"$ctx/Containerfile"
  tool build --layers=false -q -f "$ctx/Containerfile" -t "localhost/keyward/$name:node" "$ctx" >/dev/null
  rm -f "$archive"
  tool save -q --format oci-archive -o "$archive" "localhost/keyward/$name:node"
  rm -rf "$ctx"
  echo "node images: wrote $archive"
}
image pause test/harness/node/images/pause
image keyprobe test/node/keyprobe
