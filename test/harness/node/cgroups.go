package node

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// cgroupRoots are the mounted cgroup hierarchies: /sys/fs/cgroup/<controller>
// on cgroup v1 (and /sys/fs/cgroup/unified in the hybrid layout), or
// /sys/fs/cgroup itself on v2.
func cgroupRoots() []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var roots []string
	for line := range strings.Lines(string(data)) {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, pf := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(pf) < 1 || (pf[0] != "cgroup" && pf[0] != "cgroup2") {
			continue
		}
		roots = append(roots, f[4])
	}
	return roots
}

// cgroups makes the kubelet's cgroupRoot (/<name>) in every hierarchy: the
// kubelet puts kubepods under it, so that parallel nodes stay apart and Stop
// knows what to remove.
func (n *Node) cgroups() error {
	var errs []error
	for _, r := range cgroupRoots() {
		if err := os.Mkdir(filepath.Join(r, n.Name), 0o755); err != nil && !os.IsExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupProcs lists the pids in the node's cgroups, in any hierarchy.
func cgroupProcs(name string) []int {
	seen := map[int]bool{}
	for _, r := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(r, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, l := range strings.Fields(string(data)) {
				if pid, err := atoi(l); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	var out []int
	for p := range seen {
		out = append(out, p)
	}
	return out
}

// removeCgroups removes the node's cgroups, deepest first.
func removeCgroups(name string) error {
	var errs []error
	for _, r := range cgroupRoots() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(r, name), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
