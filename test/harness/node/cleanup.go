package node

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

// Stop stops the kubelet, the Pods' processes and containerd, then removes
// what the node made: mounts, its directories under /run and /var/lib,
// cgroups, the CNI cache entries and the network namespace. Safe to call
// more than once and on a partly started node.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		// The kubelet first, so that it restarts nothing.
		for i := len(n.procs) - 1; i >= 0; i-- {
			p := n.procs[i]
			if p.name == "kubelet" {
				errs = append(errs, stop(p, 15*time.Second))
			}
		}
		killAll(cgroupProcs(n.Name))
		for _, p := range n.procs {
			if p.name != "kubelet" {
				errs = append(errs, stop(p, 15*time.Second))
			}
		}
		if n.proxy != nil {
			_ = n.proxy.Close()
		}
		// The containers' logs go with the node's directories: keep a copy.
		if n.LogDir != "" && n.lib != "" {
			_ = os.CopyFS(filepath.Join(n.LogDir, "pods"), os.DirFS(filepath.Join(n.lib, "pod-logs")))
		}
		errs = append(errs, cleanup(n.Name))
		if n.watchdog != nil {
			n.watchdog.Release()
		}
		n.stopErr = errors.Join(errs...)
	})
	return n.stopErr
}

func stop(p *proc, timeout time.Duration) error {
	if p.exited() != nil {
		return nil
	}
	return controlplane.StopProcessGroup(p.cmd.Process.Pid, p.done, timeout)
}

func killAll(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// cleanup removes what a node called name left behind, whether its process
// is alive or not. Only the kubelet and containerd must be stopped first.
func cleanup(name string) error {
	var errs []error
	run, lib := filepath.Join("/run", name), filepath.Join("/var/lib", name)
	// The shims' sockets are in the fixed /run/containerd/s, and a killed
	// shim leaves its socket behind: the ones bound in the node's network
	// namespace (its socket table, read from inside) are this node's. Read
	// them while the shims live.
	var sockets []string
	if out, err := exec.Command("ip", "netns", "exec", name, "cat", "/proc/net/unix").Output(); err == nil {
		for line := range strings.Lines(string(out)) {
			if f := strings.Fields(line); len(f) >= 8 && strings.HasPrefix(f[7], "/run/containerd/s/") {
				sockets = append(sockets, f[7])
			}
		}
	}
	// The CNI results containerd caches in the fixed /var/lib/cni/results
	// are named after the network and the sandbox.
	var sandboxes []string
	for _, d := range []string{run, lib} {
		m, _ := filepath.Glob(filepath.Join(d, "containerd", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
		for _, p := range m {
			sandboxes = append(sandboxes, filepath.Base(p))
		}
	}
	// Then every process: in the namespace (host-network Pods, and the
	// kubelet and containerd of a run that died), in the cgroups (bridged
	// Pods), and the shims (daemons of their own) that serve this node's
	// containerd.
	killByNetns(filepath.Join("/run/netns", name))
	killAll(cgroupProcs(name))
	killAll(shims(filepath.Join(run, "containerd.sock")))
	for _, s := range sockets {
		_ = os.Remove(s)
	}
	for _, id := range sandboxes {
		if m, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", "*-"+id+"-*")); len(m) > 0 {
			for _, f := range m {
				_ = os.Remove(f)
			}
		}
	}
	errs = append(errs, unmountUnder(run, lib))
	for _, d := range []string{run, lib} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	// A killed process leaves its cgroup a moment later.
	var err error
	for i := 0; i < 40; i++ {
		if err = removeCgroups(name); err == nil {
			break
		}
		killAll(cgroupProcs(name))
		time.Sleep(250 * time.Millisecond)
	}
	errs = append(errs, err)
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		errs = append(errs, runQuiet("ip", "netns", "del", name))
	}
	if m, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", name+"-*")); len(m) > 0 {
		for _, f := range m {
			_ = os.Remove(f)
		}
	}
	// Fixed paths the kubelet and containerd share with any other node on
	// this machine: the device-plugin socket (unused here) and directories,
	// removed only when empty.
	_ = os.Remove("/var/lib/kubelet/device-plugins/kubelet.sock")
	for _, d := range []string{"/var/lib/kubelet/device-plugins", "/var/lib/kubelet", "/var/lib/cni/results", "/var/lib/cni", "/run/containerd/s", "/run/containerd"} {
		_ = os.Remove(d)
	}
	return errors.Join(errs...)
}

func runQuiet(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return errors.New(name + " " + strings.Join(args, " ") + ": " + strings.TrimSpace(string(out)))
	}
	return nil
}

// shims are the containerd-shim-runc-v2 processes started for the
// containerd listening on socket.
func shims(socket string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == socket {
				out = append(out, pid)
			}
		}
	}
	return out
}

// unmountUnder detaches every mount at or below the given directories,
// deepest first (the kubelet's Secret volumes, containerd's rootfs and shm
// mounts, the kubelet's rshared bind mount of its root dir).
func unmountUnder(dirs ...string) error {
	var errs []error
	for range 3 { // a bind mount may hide another; a few passes see all
		data, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		var points []string
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			mp := unescape(f[4])
			for _, d := range dirs {
				if mp == d || strings.HasPrefix(mp, d+"/") {
					points = append(points, mp)
				}
			}
		}
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		errs = nil
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, errors.New("unmount "+p+": "+err.Error()))
			}
		}
	}
	return errors.Join(errs...)
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func atoi(s string) (int, error) { return strconv.Atoi(strings.TrimSpace(s)) }

// CleanupStale removes what nodes of test processes that are gone left
// behind (a run killed by a timeout cannot clean up itself). Names carry
// the pid of the process that made them.
func CleanupStale() {
	names := map[string]bool{}
	for _, pattern := range []string{"/run/" + prefix + "*", "/var/lib/" + prefix + "*", "/run/netns/" + prefix + "*"} {
		m, _ := filepath.Glob(pattern)
		for _, p := range m {
			names[filepath.Base(p)] = true
		}
	}
	for _, r := range cgroupRoots() {
		m, _ := filepath.Glob(filepath.Join(r, prefix+"*"))
		for _, p := range m {
			names[filepath.Base(p)] = true
		}
	}
	for name := range names {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(name, prefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil {
			continue // the lock file, or not ours
		}
		if _, err := os.Stat(filepath.Join("/proc", pidStr)); err == nil && pid != 0 {
			continue // its test process is alive
		}
		// Its kubelet and containerd were killed by the watchdog; cleanup
		// kills whatever is left in its namespace and cgroups.
		_ = cleanup(name)
	}
}

// killByNetns kills the processes in the named network namespace (a dead
// run's kubelet, containerd, host-network Pods).
func killByNetns(path string) {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var ps syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &ps) == nil && ps.Ino == st.Ino && ps.Dev == st.Dev {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
