#!/usr/bin/env bash
# Writes the image as an OCI archive, for `podman load`, `docker load`,
# `kind load image-archive` or `ctr images import` on a machine without a
# registry.
#
#   IMG            image reference (default keyward/manager:dev)
#   IMAGE_ARCHIVE  output file (default dist/<IMG with / and : as ->.tar)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. hack/image/lib.sh

IMG=${IMG:-keyward/manager:dev}
name=${IMG//\//-}
IMAGE_ARCHIVE=${IMAGE_ARCHIVE:-dist/${name//:/-}.tar}
t=$(image_tool)
mkdir -p "$(dirname "$IMAGE_ARCHIVE")"
rm -f "$IMAGE_ARCHIVE"
case "$t" in
  podman) tool save --format oci-archive -o "$IMAGE_ARCHIVE" "$IMG" ;;
  buildah) tool push "$IMG" "oci-archive:$IMAGE_ARCHIVE:$IMG" ;;
  docker) tool save -o "$IMAGE_ARCHIVE" "$IMG" ;; # OCI layout since Docker 25
esac
echo "wrote $IMAGE_ARCHIVE ($(stat -c %s "$IMAGE_ARCHIVE") bytes): $IMG"
