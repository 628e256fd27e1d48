package controlplane

import (
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
)

// watchdogScript reads commands on stdin. "add PID" records a process group,
// "release" exits quietly. End of input means the parent died without
// releasing (test binary killed by a timeout, panic, SIGKILL): every recorded
// process group gets SIGTERM, then SIGKILL after 10 s.
const watchdogScript = `
pids=""
while read -r cmd arg; do
  case "$cmd" in
    add) pids="$pids $arg" ;;
    release) exit 0 ;;
  esac
done
[ -n "$pids" ] || exit 0
for p in $pids; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
i=0
while [ $i -lt 40 ]; do
  alive=""
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -n "$alive" ] || exit 0
  sleep 0.25; i=$((i+1))
done
for p in $pids; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
`

// Watchdog is a small /bin/sh process that kills the recorded child processes
// when this process dies without calling Release, so a crashed test run never
// leaves etcd, kube-apiserver or kube-controller-manager behind. It relies on
// nothing but the pipe to its stdin closing when this process exits.
type Watchdog struct {
	mu  sync.Mutex
	w   io.WriteCloser
	cmd *exec.Cmd
}

// StartWatchdog starts the watchdog in its own process group (so a terminal
// Ctrl-C does not kill it before it has done its job).
func StartWatchdog() (*Watchdog, error) {
	cmd := exec.Command("/bin/sh", "-c", watchdogScript)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting watchdog: %w", err)
	}
	return &Watchdog{w: w, cmd: cmd}, nil
}

// Add records a process (group) id to kill if this process dies.
func (d *Watchdog) Add(pids ...int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil {
		return fmt.Errorf("watchdog released")
	}
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		if _, err := fmt.Fprintf(d.w, "add %d\n", pid); err != nil {
			return err
		}
	}
	return nil
}

// Release tells the watchdog to exit without killing anything (call it after
// the children were stopped normally).
func (d *Watchdog) Release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.w == nil {
		return
	}
	_, _ = io.WriteString(d.w, "release\n")
	_ = d.w.Close()
	d.w = nil
	_ = d.cmd.Wait()
}
