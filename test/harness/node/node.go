// Package node is the test harness's real node: containerd and a kubelet
// (built by `make node-bins` into bin/node, hack/node/build.sh) running in a
// network namespace of their own, joined to this machine by a veth pair, and
// registered with a control plane started by test/harness/testenv. Pods run
// with Debian's runc from images imported from OCI archives (nothing is
// pulled). Everything it creates (processes, mounts, directories, cgroups,
// the network namespace) is removed by Stop, and by the next Start when a
// run died without stopping. docs/development.md says what it needs (root,
// network namespaces, cgroups).
//
//	n, err := node.Start(ctx, node.Options{Config: env.Config, Images: archives})
//	...
//	defer n.Stop()
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

// Options configure a node.
type Options struct {
	// Config reaches the API server (admin). The kubelet gets its
	// credentials, through a proxy on the host end of the veth pair.
	Config *rest.Config
	// Images are OCI archives imported into containerd's k8s.io namespace
	// before the kubelet starts. The first must be the sandbox image
	// (SandboxImage).
	Images []string
	// SandboxImage is the pause image's reference (default
	// localhost/keyward/pause:node, from hack/node/images.sh).
	SandboxImage string
	// SyncFrequency is the kubelet's syncFrequency, which bounds how long a
	// changed Secret takes to reach a mounted volume (default 10s; the
	// kubelet's own default is 1m).
	SyncFrequency time.Duration
	// LogDir receives containerd.log and kubelet.log (default
	// <repo>/bin/node/logs/<name>).
	LogDir string
	// ReadyTimeout bounds the wait for the Node to be Ready (default 2m).
	ReadyTimeout time.Duration
}

// Node is a running node.
type Node struct {
	Name   string // Node object's name and the network namespace's
	HostIP string // this machine's end of the veth pair: where Pods reach the tests
	NodeIP string // the node's end: the kubelet's address
	LogDir string

	id        string
	bin       bins
	run       string // /run/<name>: sockets, containerd state, runc state, netns mounts
	lib       string // /var/lib/<name>: kubelet root dir, containerd root, CNI, config
	cgroup    string // the kubelet's cgroupRoot, /<name>
	hostVeth  string
	subnet    int
	proxy     net.Listener
	procs     []*proc
	watchdog  *controlplane.Watchdog
	stopOnce  sync.Once
	stopErr   error
	apiTarget string
	routed    bool
}

type bins struct {
	kubelet, containerd, ctr, shimDir, cniDir, runc string
}

// prefix names everything a node creates on the machine: directories,
// cgroups, the network namespace, the veth, the CNI network. The pid of the
// process that made it follows, so that a later run can tell a dead run's
// leftovers from a live one's.
const prefix = "kwnode-"

// DefaultSandboxImage is the pause image hack/node/images.sh builds.
const DefaultSandboxImage = "localhost/keyward/pause:node"

// Start starts containerd and the kubelet and returns once the Node is
// Ready. On error everything it made is removed again.
func Start(ctx context.Context, o Options) (_ *Node, retErr error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the test node needs root (network namespaces, mounts, cgroups): run `make test-node` as root")
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	b, err := findBins(root)
	if err != nil {
		return nil, err
	}
	CleanupStale()
	if o.SandboxImage == "" {
		o.SandboxImage = DefaultSandboxImage
	}
	if o.SyncFrequency == 0 {
		o.SyncFrequency = 10 * time.Second
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Minute
	}

	n := &Node{bin: b}
	n.id = nextID()
	n.Name = prefix + n.id
	n.run = filepath.Join("/run", n.Name)
	n.lib = filepath.Join("/var/lib", n.Name)
	n.cgroup = "/" + n.Name
	n.LogDir = o.LogDir
	if n.LogDir == "" {
		n.LogDir = filepath.Join(root, "bin", "node", "logs", n.Name)
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, n.Stop())
		}
	}()
	for _, d := range []string{n.run, n.lib, n.LogDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if n.watchdog, err = controlplane.StartWatchdog(); err != nil {
		return nil, err
	}
	if err := n.network(); err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	if err := n.cgroups(); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if err := n.startProxy(o.Config); err != nil {
		return nil, fmt.Errorf("API server proxy: %w", err)
	}
	if err := n.startContainerd(ctx, o); err != nil {
		return nil, err
	}
	if err := n.startKubelet(o); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, o); err != nil {
		return nil, err
	}
	return n, nil
}

func findBins(root string) (bins, error) {
	cp, err := controlplane.Versions(root)
	if err != nil {
		return bins{}, err
	}
	nv, err := readEnv(filepath.Join(root, "hack", "node", "versions.env"))
	if err != nil {
		return bins{}, err
	}
	dir := os.Getenv("NODE_DIR")
	if dir == "" {
		dir = filepath.Join(root, "bin", "node")
	}
	cd := filepath.Join(dir, "containerd-"+nv["CONTAINERD_VERSION"])
	b := bins{
		kubelet:    filepath.Join(dir, "kubelet-"+cp["KUBERNETES_VERSION"], "kubelet"),
		containerd: filepath.Join(cd, "containerd"),
		ctr:        filepath.Join(cd, "ctr"),
		shimDir:    cd,
		cniDir:     filepath.Join(dir, "cni-"+nv["CNI_PLUGINS_VERSION"]),
	}
	var missing []string
	for _, f := range []string{b.kubelet, b.containerd, b.ctr, filepath.Join(cd, "containerd-shim-runc-v2"),
		filepath.Join(b.cniDir, "bridge"), filepath.Join(b.cniDir, "loopback"), filepath.Join(b.cniDir, "host-local")} {
		if st, err := os.Stat(f); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("node binaries missing (run `make node-bins`): %s", strings.Join(missing, ", "))
	}
	if b.runc, err = exec.LookPath("runc"); err != nil {
		return b, errors.New("runc not found: apt-get install runc")
	}
	return b, nil
}

func readEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return out, nil
}

var counter struct {
	sync.Mutex
	n int
}

func nextID() string {
	counter.Lock()
	defer counter.Unlock()
	counter.n++
	return fmt.Sprintf("%d-%d", os.Getpid(), counter.n)
}

// proc is a child process in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (n *Node) spawn(name string, logFile string, args ...string) (*proc, error) {
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	// nsenter joins the node's network namespace only: mounts the kubelet
	// makes (Secret volumes) must be seen by containerd and runc.
	full := append([]string{"--net=" + n.netnsPath(), "--"}, args...)
	cmd := exec.Command("nsenter", full...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "PATH="+n.bin.shimDir+":"+filepath.Dir(n.bin.runc)+":/usr/sbin:/usr/bin:/sbin:/bin")
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	_ = n.watchdog.Add(cmd.Process.Pid)
	return p, nil
}

func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

// Ctr runs ctr against the node's containerd in its k8s.io namespace, e.g.
// Ctr("images", "tag", "localhost/x:dev", "docker.io/x:dev").
func (n *Node) Ctr(args ...string) error {
	return run(n.bin.ctr, append([]string{"--address", n.socket(), "-n", "k8s.io"}, args...)...)
}

func (n *Node) netnsPath() string { return filepath.Join("/run/netns", n.Name) }

// waitReady waits for the Node object to be Ready.
func (n *Node) waitReady(ctx context.Context, o Options) error {
	c, err := client.New(o.Config, client.Options{})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(o.ReadyTimeout)
	var last string
	for time.Now().Before(deadline) {
		for _, p := range n.procs {
			if err := p.exited(); err != nil {
				return fmt.Errorf("%w (logs in %s)", err, n.LogDir)
			}
		}
		var node corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err == nil {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					if cond.Status == corev1.ConditionTrue {
						return nil
					}
					last = cond.Reason + ": " + cond.Message
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s not Ready after %s (%s; logs in %s)", n.Name, o.ReadyTimeout, last, n.LogDir)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }
