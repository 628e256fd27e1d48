package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ControllerManagerArgs are the kube-controller-manager flags used everywhere:
// only the garbage collector, the namespace controller and the ClusterRole
// aggregation controller (what a real cluster does for owner references,
// namespace deletion and aggregated roles), acting with its own credentials,
// on loopback, without a serving port.
var ControllerManagerArgs = []string{
	"--controllers=garbagecollector,namespace,clusterrole-aggregation",
	"--use-service-account-credentials=false",
	"--leader-elect=false",
	"--bind-address=127.0.0.1",
	"--secure-port=0",
	"--concurrent-gc-syncs=20",
	"--v=2",
}

// ControllerManager is a kube-controller-manager child process.
type ControllerManager struct {
	// Path of the kube-controller-manager binary.
	Path string
	// Kubeconfig is the path of a kubeconfig for a user in system:masters.
	Kubeconfig string
	// LogFile receives the process's stdout and stderr.
	LogFile string
	// ExtraArgs are appended to ControllerManagerArgs.
	ExtraArgs []string

	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
	waitErr error
	stopped sync.Once
}

// Start launches the process in its own process group.
func (m *ControllerManager) Start() error {
	if err := os.MkdirAll(filepath.Dir(m.LogFile), 0o755); err != nil {
		return err
	}
	log, err := os.Create(m.LogFile)
	if err != nil {
		return err
	}
	args := append([]string{"--kubeconfig=" + m.Kubeconfig}, ControllerManagerArgs...)
	args = append(args, m.ExtraArgs...)
	cmd := exec.Command(m.Path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	m.cmd, m.log, m.done = cmd, log, make(chan struct{})
	go func() {
		m.waitErr = cmd.Wait()
		_ = log.Close()
		close(m.done)
	}()
	return nil
}

// Pid is the process id (0 before Start).
func (m *ControllerManager) Pid() int {
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Exited reports whether the process has ended, with an error naming the log
// file (and its last lines) when it did.
func (m *ControllerManager) Exited() error {
	if m.done == nil {
		return nil
	}
	select {
	case <-m.done:
		return fmt.Errorf("kube-controller-manager exited (%v); its log is %s:\n%s", m.waitErr, m.LogFile, tail(m.LogFile, 15))
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process group and waits up to timeout, then
// SIGKILLs it. It is safe to call more than once.
func (m *ControllerManager) Stop(timeout time.Duration) error {
	var err error
	m.stopped.Do(func() {
		if m.cmd == nil {
			return
		}
		err = StopProcessGroup(m.cmd.Process.Pid, m.done, timeout)
	})
	return err
}

// StopProcessGroup sends SIGTERM to process group pgid and waits for done to be
// closed; after timeout it sends SIGKILL and waits again.
func StopProcessGroup(pgid int, done <-chan struct{}, timeout time.Duration) error {
	select {
	case <-done:
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-done:
		return fmt.Errorf("process %d did not stop within %s after SIGTERM; killed", pgid, timeout)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("process %d did not die after SIGKILL", pgid)
	}
}

func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// WaitForGarbageCollector proves the garbage collector of a running
// kube-controller-manager works: it creates an owner ConfigMap and a dependent
// owner-referencing it in namespace ns, deletes the owner, and waits until the
// dependent is gone. The garbage collector only acts once all its resource
// monitors (CRDs present at its start included) have synced, so when this
// returns, cascades work for every type. alive is polled so a crashed process
// fails fast instead of timing out.
func WaitForGarbageCollector(ctx context.Context, c client.Client, ns string, timeout time.Duration, alive func() error) error {
	suffix := utilrand.String(6)
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gc-probe-owner-" + suffix, Namespace: ns}}
	if err := c.Create(ctx, owner); err != nil {
		return fmt.Errorf("garbage-collector probe: %w", err)
	}
	dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: "gc-probe-dependent-" + suffix, Namespace: ns,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}},
	}}
	if err := c.Create(ctx, dependent); err != nil {
		return fmt.Errorf("garbage-collector probe: %w", err)
	}
	if err := c.Delete(ctx, owner, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		return fmt.Errorf("garbage-collector probe: %w", err)
	}
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := alive(); err != nil {
			return false, err
		}
		lastErr = c.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{})
		return apierrors.IsNotFound(lastErr), nil
	})
	if err != nil {
		if aliveErr := alive(); aliveErr != nil {
			return aliveErr
		}
		return errors.Join(fmt.Errorf("garbage collector did not delete probe ConfigMap %s/%s within %s", ns, dependent.Name, timeout), lastErr, err)
	}
	return nil
}
