package node

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// containerdConfig is containerd v2's configuration (version 3) with every
// path under the node's own directories. restrict_oom_score_adj is needed on
// a machine without CAP_SYS_RESOURCE: without it runc fails every sandbox
// with "can't get final child's PID from pipe: EOF". NRI is off (it listens on
// a fixed socket), netns mounts go under the state dir.
const containerdConfig = `version = 3
root = "{{lib}}/containerd"
state = "{{run}}/containerd"
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{{run}}/containerd.sock"

[ttrpc]
  address = "{{run}}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = "{{lib}}/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{{sandbox}}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{{runc}}"
        Root = "{{run}}/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{{cni}}"]
    conf_dir = "{{lib}}/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`

// cniConfig is a bridge inside the node's network namespace, for Pods that
// are not hostNetwork; its subnet (10.251.S.0/24) exists only there. The
// Pods' default route leads into the node's namespace, which has none. The
// kubelet keeps a Node NotReady until a CNI config is present, even for
// hostNetwork Pods, so it is written before containerd starts.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "{{name}}",
  "plugins": [{
    "type": "bridge",
    "bridge": "kwbr0",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "10.251.{{subnet}}.0/24"}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": "{{lib}}/cni/ipam"
    }
  }]
}
`

// kubeletConfig: cgroupfs and failCgroupV1 false for a cgroup v1 machine
// without systemd; every path of its own under the node's directories (the
// device-plugin directory /var/lib/kubelet/device-plugins is fixed in the
// kubelet); image GC off so that imported images stay; eviction thresholds
// low so that a busy shared machine does not evict the suite's Pods.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {{cgroup}}
containerRuntimeEndpoint: unix://{{run}}/containerd.sock
syncFrequency: {{sync}}
address: {{nodeIP}}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: {{lib}}/pod-logs
volumePluginDir: {{lib}}/volume-plugins
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
resolvConf: /etc/resolv.conf
`

func (n *Node) expand(tmpl string, o Options) string {
	return strings.NewReplacer(
		"{{lib}}", n.lib, "{{run}}", n.run, "{{sandbox}}", o.SandboxImage, "{{runc}}", n.bin.runc,
		"{{cni}}", n.bin.cniDir, "{{name}}", n.Name, "{{subnet}}", itoa(n.subnet), "{{cgroup}}", n.cgroup,
		"{{sync}}", o.SyncFrequency.String(), "{{nodeIP}}", n.NodeIP,
	).Replace(tmpl)
}

func (n *Node) socket() string { return filepath.Join(n.run, "containerd.sock") }

func (n *Node) startContainerd(ctx context.Context, o Options) error {
	if err := os.MkdirAll(filepath.Join(n.lib, "cni", "net.d"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.lib, "cni", "net.d", "10-bridge.conflist"), []byte(n.expand(cniConfig, o)), 0o600); err != nil {
		return err
	}
	cfg := filepath.Join(n.lib, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(n.expand(containerdConfig, o)), 0o600); err != nil {
		return err
	}
	p, err := n.spawn("containerd", filepath.Join(n.LogDir, "containerd.log"), n.bin.containerd, "--config", cfg)
	if err != nil {
		return err
	}
	// Up when ctr can talk to it.
	deadline := time.Now().Add(time.Minute)
	for {
		if err := p.exited(); err != nil {
			return fmt.Errorf("%w (log %s)", err, filepath.Join(n.LogDir, "containerd.log"))
		}
		if exec.CommandContext(ctx, n.bin.ctr, "--address", n.socket(), "version").Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer within a minute (log %s)", filepath.Join(n.LogDir, "containerd.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, img := range o.Images {
		if err := run(n.bin.ctr, "--address", n.socket(), "-n", "k8s.io", "images", "import", "--local", img); err != nil {
			return fmt.Errorf("importing %s: %w", img, err)
		}
	}
	return nil
}

func (n *Node) startKubelet(o Options) error {
	u, err := url.Parse(o.Config.Host)
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["node"] = &clientcmdapi.Cluster{
		Server:                   "https://" + n.proxy.Addr().String(),
		CertificateAuthorityData: o.Config.CAData,
		TLSServerName:            u.Hostname(),
	}
	kc.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificateData: o.Config.CertData, ClientKeyData: o.Config.KeyData, Token: o.Config.BearerToken}
	c := clientcmdapi.NewContext()
	c.Cluster, c.AuthInfo = "node", "node"
	kc.Contexts["node"] = c
	kc.CurrentContext = "node"
	kubeconfig := filepath.Join(n.lib, "kubelet.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return err
	}
	cfg := filepath.Join(n.lib, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(n.expand(kubeletConfig, o)), 0o600); err != nil {
		return err
	}
	_, err = n.spawn("kubelet", filepath.Join(n.LogDir, "kubelet.log"), n.bin.kubelet,
		"--config="+cfg, "--kubeconfig="+kubeconfig, "--root-dir="+filepath.Join(n.lib, "kubelet"),
		"--cert-dir="+filepath.Join(n.lib, "kubelet-pki"),
		"--hostname-override="+n.Name, "--node-ip="+n.NodeIP, "--v=2")
	return err
}

// HostAddr is an address on this machine's end of the veth pair with a free
// port: where a listener reachable from the node's Pods can bind.
func (n *Node) HostAddr() string { return net.JoinHostPort(n.HostIP, "0") }
