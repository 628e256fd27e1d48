package main

import "syscall"

// setParentDeathSignal asks the kernel for SIGTERM when our parent (make)
// dies, so even a killed make never leaves the control plane running.
func setParentDeathSignal() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
}
