#!/usr/bin/env bash
# Builds the test node from the Go module proxy into bin/node/: the kubelet
# (from the control plane's module, hack/controlplane, so it is the same
# k8s.io/kubernetes version and shares its build cache), containerd v2 with
# containerd-shim-runc-v2 and ctr, and the CNI plugins loopback, bridge and
# host-local. All static (CGO_ENABLED=0). runc comes from Debian. A binary that
# is already there is not rebuilt, so a second run is a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../controlplane/versions.env
source "$root/hack/controlplane/versions.env"
# shellcheck source=versions.env
source "$here/versions.env"

out="${NODE_DIR:-$root/bin/node}"
kubelet_dir="$out/kubelet-$KUBERNETES_VERSION"
containerd_dir="$out/containerd-$CONTAINERD_VERSION"
cni_dir="$out/cni-$CNI_PLUGINS_VERSION"
mkdir -p "$kubelet_dir" "$containerd_dir" "$cni_dir"

ver="${KUBERNETES_VERSION#v}"
major="${ver%%.*}"
minor="${ver#*.}"; minor="${minor%%.*}"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# build dir name tags ldflags package[@version]: `go build` in dir (a module
# directory) or, with dir "-", `go install pkg@version` into a scratch GOBIN.
build() {
  local dir="$1" name="$2" tags="$3" ldflags="$4" pkg="$5"
  local dest="$6"
  if [ -x "$dest/$name" ]; then
    echo "node: $name present ($dest/$name)"
    return
  fi
  echo "node: building $name from $pkg (first build takes minutes) ..."
  local start=$SECONDS
  if [ "$dir" != "-" ]; then
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$dest/$name.tmp" "$pkg")
    mv "$dest/$name.tmp" "$dest/$name"
  else
    local gobin; gobin="$(mktemp -d "$dest/.gobin.XXXXXX")"
    CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -tags "$tags" -ldflags "-s -w $ldflags" "$pkg"
    mv "$gobin/$name" "$dest/$name"
    rmdir "$gobin"
  fi
  echo "node: built $name in $((SECONDS - start))s"
}

cdmod=github.com/containerd/containerd/v2
cdver="-X $cdmod/version.Version=$CONTAINERD_VERSION -X $cdmod/version.Package=$cdmod"
what="${1:-all}"
if [ "$what" = all ] || [ "$what" = containerd ]; then
  build - containerd "no_btrfs no_zfs no_devmapper" "$cdver" "$cdmod/cmd/containerd@$CONTAINERD_VERSION" "$containerd_dir"
  build - containerd-shim-runc-v2 "no_grpc" "$cdver" "$cdmod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$containerd_dir"
  build - ctr "no_btrfs no_zfs no_devmapper" "$cdver" "$cdmod/cmd/ctr@$CONTAINERD_VERSION" "$containerd_dir"
fi
if [ "$what" = all ] || [ "$what" = cni ]; then
  for p in main/loopback main/bridge ipam/host-local; do
    build - "${p#*/}" "" "" "github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION" "$cni_dir"
  done
fi
# The kubelet last: built from the control plane's module, it reuses the
# packages the control-plane build (make controlplane, possibly running at the
# same time in CI) has put in the build cache by then.
if [ "$what" = all ] || [ "$what" = kubelet ]; then
  build "$root/hack/controlplane" kubelet "" "$stamp" k8s.io/kubernetes/cmd/kubelet "$kubelet_dir"
fi
echo "node: ready in $out"
