package node

import (
	"strings"
	"testing"
	"time"
)

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/kwnode-1-1/kubelet`: "/var/lib/kwnode-1-1/kubelet",
		`/run/a\040b`:                 "/run/a b",
		`/run/tab\011x\134y`:          "/run/tab\tx\\y",
		`/run/trailing\04`:            `/run/trailing\04`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every placeholder of the configurations is filled, and every path the
// node writes lies under its own directories.
func TestConfigsUseTheNodesOwnPaths(t *testing.T) {
	n := &Node{Name: "kwnode-7-1", run: "/run/kwnode-7-1", lib: "/var/lib/kwnode-7-1", cgroup: "/kwnode-7-1",
		NodeIP: "10.250.3.2", subnet: 3, bin: bins{runc: "/usr/sbin/runc", cniDir: "/repo/bin/node/cni-v1"}}
	o := Options{SandboxImage: DefaultSandboxImage, SyncFrequency: 10 * time.Second}
	for name, tmpl := range map[string]string{"containerd": containerdConfig, "cni": cniConfig, "kubelet": kubeletConfig} {
		got := n.expand(tmpl, o)
		if strings.Contains(got, "{{") {
			t.Errorf("%s config has an unfilled placeholder:\n%s", name, got)
		}
		for _, fixed := range []string{"/var/lib/kubelet", "/run/containerd", "/var/lib/containerd", "/etc/cni", "/opt/", "/var/lib/cni"} {
			if strings.Contains(got, fixed) {
				t.Errorf("%s config uses the shared path %s", name, fixed)
			}
		}
	}
	if k := n.expand(kubeletConfig, o); !strings.Contains(k, "syncFrequency: 10s") || !strings.Contains(k, "cgroupRoot: /kwnode-7-1") {
		t.Errorf("kubelet config misses syncFrequency or cgroupRoot:\n%s", k)
	}
	if c := n.expand(containerdConfig, o); !strings.Contains(c, "restrict_oom_score_adj = true") || !strings.Contains(c, `sandbox = "`+DefaultSandboxImage+`"`) {
		t.Errorf("containerd config misses restrict_oom_score_adj or the pinned sandbox image:\n%s", c)
	}
}
