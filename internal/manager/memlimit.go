package manager

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryMax is where cgroup v2 shows the container's memory limit.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memoryLimitShare is the part of the container's memory limit given to Go
// as its soft limit; the rest is for stacks, the runtime and the kernel.
const memoryLimitShare = 0.9

// softMemoryLimit returns the Go soft memory limit for a container whose
// cgroup memory.max reads content: memoryLimitShare of it, or 0 when there
// is no limit ("max") or it cannot be read.
func softMemoryLimit(content string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(content), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return int64(float64(n) * memoryLimitShare)
}

// setMemoryLimit makes the garbage collector work harder as the heap nears
// the container's memory limit, instead of the kernel killing the manager
// (a cache of many keys grows with them; docs/operations.md). GOMEMLIMIT,
// when set, wins. It returns the limit set, 0 for none.
func setMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	b, err := os.ReadFile(cgroupMemoryMax)
	if err != nil {
		return 0
	}
	limit := softMemoryLimit(string(b))
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	return limit
}
