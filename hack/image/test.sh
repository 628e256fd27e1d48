#!/usr/bin/env bash
# `make image-test`: builds the image under a throwaway tag (the same
# hack/image/build.sh as `make image`), then runs the Go test in test/image
# (build tag "image"), which checks the image's configuration and contents and
# runs it with podman as config/manager's Deployment runs it, against a real
# control plane on loopback. The log goes to bin/test-image.log. The tag and
# any container of this run are removed on exit, failed or not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. hack/image/lib.sh

t=$(image_tool)
if [ "$t" != podman ]; then
  echo "make image-test runs the image with podman (and runc); found only $t: apt-get install podman runc" >&2
  exit 1
fi
run=$$
export KEYWARD_IMAGE=${IMAGE_TEST_IMG:-localhost/keyward/manager:image-test-$run}
# IMAGE_TEST_PREBUILT=1: test IMAGE_TEST_IMG as it is (the image `make
# release` ships), without building or removing it.
prebuilt=${IMAGE_TEST_PREBUILT:-0}
export KEYWARD_IMAGE_RUN=$run
export KEYWARD_IMAGE_DEFAULT=${IMG_DEFAULT:-keyward/manager:dev}
export KEYWARD_PODMAN="podman ${PODMAN_FLAGS:-}"
export VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
if [ -z "${REVISION:-}" ]; then
  REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REVISION+=-dirty
  fi
fi
export REVISION

cleanup() {
  local ids
  ids=$(tool ps -aq --filter "label=keyward.dev/image-test=$run" 2>/dev/null || true)
  [ -z "$ids" ] || tool rm -f $ids >/dev/null 2>&1 || true
  [ "$prebuilt" = 1 ] || tool rmi -f "$KEYWARD_IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

mkdir -p bin/image
rm -f bin/test-image.log
if [ "$prebuilt" = 1 ]; then
  echo "testing the prebuilt image $KEYWARD_IMAGE ($(tool image inspect --format '{{.Id}}' "$KEYWARD_IMAGE"))"
else
  IMG=$KEYWARD_IMAGE hack/image/build.sh
fi

set +e
go test -tags image ./test/image -count=1 -v -timeout 10m 2>&1 | tee bin/test-image.log |
  grep -E '^\s*(--- |ok|FAIL|panic)|MEASURED'
status=${PIPESTATUS[0]}
set -e
echo "image-test: exit $status, $(grep -c -- '--- PASS' bin/test-image.log) passed, $(grep -c -- '--- FAIL' bin/test-image.log) failed (full log: bin/test-image.log; manager log: bin/image/manager.log)"
exit "$status"
