#!/usr/bin/env bash
# Builds the manager as a static binary on the host and packs it into an OCI
# image from scratch (hack/image/Containerfile). Needs no network beyond the Go
# module cache, and no base image.
#
#   IMG       image reference (default keyward/manager:dev)
#   VERSION   stamped into the binary and the image label (default: git describe)
#   REVISION  source commit (default: git rev-parse HEAD, "-dirty" if modified)
#   SOURCE_DATE_EPOCH  the image's creation and file times (default: the
#             commit's time), so that a build is reproducible (podman, buildah)
#   IMAGE_SOURCE, IMAGE_LICENSES  the OCI labels' values
#   IMAGE_TOOL, PODMAN_FLAGS      see hack/image/lib.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. hack/image/lib.sh

IMG=${IMG:-keyward/manager:dev}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
if [ -z "${REVISION:-}" ]; then
  REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION+=-dirty
  fi
fi
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
IMAGE_SOURCE=${IMAGE_SOURCE:-https://keyward.dev/keyward}
IMAGE_LICENSES=${IMAGE_LICENSES:-Apache-2.0}
GOARCH=${GOARCH:-$(go env GOARCH)}
t=$(image_tool)

ctx=bin/image/context
rm -rf "$ctx"
mkdir -p "$ctx/etc"
echo "building the manager: CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH, version $VERSION, revision $REVISION"
CGO_ENABLED=0 GOOS=linux GOARCH="$GOARCH" go build -trimpath \
  -ldflags "-s -w -X keyward.dev/keyward/internal/version.Version=$VERSION -X keyward.dev/keyward/internal/version.Revision=$REVISION" -o "$ctx/manager" .
# The same user and group entries as distroless' nonroot image.
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$ctx/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$ctx/etc/group"
chmod 0644 "$ctx/etc/passwd" "$ctx/etc/group"
chmod 0755 "$ctx/manager"

args=(-f hack/image/Containerfile -t "$IMG"
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
  --build-arg "SOURCE=$IMAGE_SOURCE" --build-arg "LICENSES=$IMAGE_LICENSES")
[ "$t" = docker ] || args+=(--platform "linux/$GOARCH")
[ "$t" != podman ] || args+=(--layers=false) # one layer, no intermediate images left behind
[ "$t" = docker ] || args+=(--timestamp "$SOURCE_DATE_EPOCH")
# The image IMG named before this build, removed after it if nothing else
# names it, so repeated builds leave no untagged images behind.
old=""
[ "$t" != podman ] || old=$(tool image inspect --format '{{.Id}}' "$IMG" 2>/dev/null || true)
echo "packing $IMG with $t"
case "$t" in
  buildah) tool bud "${args[@]}" "$ctx" ;;
  *) tool build "${args[@]}" "$ctx" ;;
esac
[ "$t" = buildah ] || echo "built $IMG: $(tool image inspect --format '{{.Size}}' "$IMG") bytes"
if [ -n "$old" ] && [ "$old" != "$(tool image inspect --format '{{.Id}}' "$IMG")" ] &&
  [ -z "$(tool image inspect --format '{{join .RepoTags ","}}' "$old" 2>/dev/null)" ]; then
  tool rmi "$old" >/dev/null 2>&1 || true
fi
