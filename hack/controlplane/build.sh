#!/usr/bin/env bash
# Builds the real control-plane binaries from the Go module proxy into
# bin/k8s/<KUBERNETES_VERSION>/: kube-apiserver, kube-controller-manager,
# kubectl and etcd, plus etcdctl and etcdutl (snapshot save and restore,
# docs/backup-restore.md) from the module in etcdtools/. No Docker and no
# download site needed. A binary that is
# already there is not rebuilt, so a second run is a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

out="${CONTROLPLANE_DIR:-$root/bin/k8s/$KUBERNETES_VERSION}"
mkdir -p "$out"

ver="${KUBERNETES_VERSION#v}"
major="${ver%%.*}"
minor="${ver#*.}"; minor="${minor%%.*}"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # name package [module directory]
  local name="$1" pkg="$2" dir="${3:-$here}"
  if [ -x "$out/$name" ]; then
    echo "controlplane: $name present ($out/$name)"
    return
  fi
  echo "controlplane: building $name from $pkg (first build takes minutes) ..."
  local start=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $stamp" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "controlplane: built $name in $((SECONDS - start))s"
}

build etcd ./etcd
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl k8s.io/kubernetes/cmd/kubectl
build etcdctl go.etcd.io/etcd/etcdctl/v3 "$here/etcdtools"
build etcdutl go.etcd.io/etcd/etcdutl/v3 "$here/etcdtools"
echo "controlplane: ready in $out"
