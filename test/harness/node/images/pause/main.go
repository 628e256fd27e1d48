// Command pause is the test node's sandbox ("pause") image: PID 1 of every
// Pod sandbox. It reaps orphaned children and exits on SIGINT or SIGTERM,
// like the upstream pause container, and is built FROM scratch
// (hack/node/images.sh) so that nothing is pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
