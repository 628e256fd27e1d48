//go:build !linux

package controlplane

// ChildProcesses is only implemented on Linux (it reads /proc); elsewhere the
// watchdog covers kube-controller-manager only.
func ChildProcesses(paths ...string) []int { return nil }

// ProcessExe is only implemented on Linux.
func ProcessExe(pid int) string { return "" }
