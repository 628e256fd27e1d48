package controlplane

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ChildProcesses returns the pids of the live direct children of this process
// whose executable is one of paths. envtest does not expose the pids of the
// etcd and kube-apiserver it starts; this finds them for the watchdog.
func ChildProcesses(paths ...string) []int {
	want := map[string]bool{}
	for _, p := range paths {
		if abs, err := filepath.Abs(p); err == nil {
			want[abs] = true
		}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			want[real] = true
		}
	}
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid(pid) != self {
			continue
		}
		if want[ProcessExe(pid)] {
			out = append(out, pid)
		}
	}
	return out
}

// ProcessExe returns the executable of a live process, or "".
func ProcessExe(pid int) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

func ppid(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// pid (comm) state ppid ...; comm may contain spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return -1
	}
	p, _ := strconv.Atoi(f[1])
	return p
}
