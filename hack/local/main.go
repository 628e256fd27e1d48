// Command local runs Keyward on an embedded control plane: the real etcd,
// kube-apiserver and kube-controller-manager (garbage collector and namespace
// controllers) from bin/k8s/<version>, listening on loopback, with data under
// bin/local/ (etcd's data survives restarts), an admin kubeconfig in
// bin/local/kubeconfig, Keyward's CRDs, ClusterRoles and admission policies
// installed, and the manager running in the foreground. Ctrl-C or SIGTERM
// stops every process it started (KEYWARD_LOCAL_DIR moves bin/local
// elsewhere). `make local` builds and runs it; arguments are passed on to
// the manager (`make local ARGS=--api-keys-enabled-by-default`).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

const (
	metricsAddr = "127.0.0.1:8080"
	probeAddr   = "127.0.0.1:8081"
	verifyAddr  = "127.0.0.1:8082"
	grpcAddr    = "127.0.0.1:8083"
)

func main() {
	os.Exit(run())
}

func logln(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "local: "+format+"\n", args...)
}

// procs is what this run started, in start order; teardown goes in reverse.
type procs struct {
	dir      string
	env      *envtest.Environment
	kcm      *controlplane.ControllerManager
	manager  *exec.Cmd
	mgrDone  chan struct{}
	watchdog *controlplane.Watchdog
	records  []string
	logs     []*os.File
}

func run() int {
	begin := time.Now()
	setParentDeathSignal()
	logf.SetLogger(logr.Discard()) // envtest's own logging; we report errors ourselves

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		s := <-sigs
		logln("%s received, stopping everything ...", s)
		cancel()
		for s := range sigs {
			logln("%s received again, still stopping (processes get SIGKILL after their grace period)", s)
		}
	}()

	root, err := controlplane.RepoRoot()
	if err != nil {
		logln("%v", err)
		return 1
	}
	bin, err := controlplane.BinDir(root)
	if err != nil {
		logln("%v", err)
		return 1
	}
	// KEYWARD_LOCAL_DIR gives a run its own state (test/bench/issuance-table.sh
	// uses it to measure on a fresh control plane).
	dir := filepath.Join(root, "bin", "local")
	if d := os.Getenv("KEYWARD_LOCAL_DIR"); d != "" {
		dir, _ = filepath.Abs(d)
	}
	p := &procs{dir: dir}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		logln("%v", err)
		return 1
	}
	if err := p.cleanStale(); err != nil {
		logln("%v", err)
		return 1
	}
	managerArgs := os.Args[1:]
	if err := checkPortsFree(managerArgs); err != nil {
		logln("%v", err)
		return 1
	}

	code := p.start(ctx, root, bin, managerArgs, begin)
	if err := p.stop(); err != nil {
		logln("stopping: %v", err)
		if code == 0 {
			code = 1
		}
	}
	logln("stopped; etcd data kept in %s", rel(root, filepath.Join(p.dir, "etcd")))
	return code
}

func (p *procs) start(ctx context.Context, root, bin string, managerArgs []string, begin time.Time) int {
	fail := func(err error) int {
		if ctx.Err() != nil {
			return 0 // interrupted by the user
		}
		logln("%v", err)
		return 1
	}

	// Build the manager while the control plane starts.
	managerBin := filepath.Join(root, "bin", "manager")
	built := make(chan error, 1)
	go func() {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", managerBin, ".")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build -o bin/manager . failed: %w\n%s", err, out)
		}
		built <- err
	}()

	var err error
	if p.watchdog, err = controlplane.StartWatchdog(); err != nil {
		return fail(err)
	}
	if err := p.record("local", os.Getpid()); err != nil {
		return fail(err)
	}

	// etcd and kube-apiserver, through envtest's process management (it also
	// provisions the serving certificates and client-certificate users).
	etcdLog, err := p.logFile("etcd.log")
	if err != nil {
		return fail(err)
	}
	apiLog, err := p.logFile("kube-apiserver.log")
	if err != nil {
		return fail(err)
	}
	// envtest generates fresh serving and client certificates on every start
	// (and cannot reuse old ones), so the kubeconfig is rewritten each run.
	pki := filepath.Join(p.dir, "pki")
	_ = os.RemoveAll(pki)
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return fail(err)
	}
	etcd := &envtest.Etcd{DataDir: filepath.Join(p.dir, "etcd"), Out: etcdLog, Err: etcdLog}
	etcd.Configure().Set("unsafe-no-fsync", "false") // the data is kept: keep it safe
	p.env = &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		ControlPlane: envtest.ControlPlane{
			Etcd:      etcd,
			APIServer: &envtest.APIServer{CertDir: pki, Out: apiLog, Err: apiLog},
		},
		ControlPlaneStartTimeout: 60 * time.Second,
	}
	logln("starting etcd and kube-apiserver (%s) ...", rel(root, bin))
	cfg, err := controlplane.StartEnvtest(p.env, bin, p.watchdog)
	for _, pid := range controlplane.ChildProcesses(filepath.Join(bin, "etcd"), filepath.Join(bin, "kube-apiserver")) {
		_ = p.record(filepath.Base(controlplane.ProcessExe(pid)), pid)
	}
	if err != nil {
		return fail(fmt.Errorf("starting the control plane (logs in %s): %w", rel(root, p.dir), err))
	}
	if ctx.Err() != nil {
		return 0
	}
	kubeconfig := filepath.Join(p.dir, "kubeconfig")
	if err := controlplane.WriteKubeconfig(kubeconfig, "keyward-local", cfg); err != nil {
		return fail(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return fail(err)
	}
	installed, err := controlplane.InstallClusterManifests(ctx, c, root)
	if err != nil {
		return fail(err)
	}
	logln("installed %d CRDs and %d ClusterRoles/bindings/admission policies", len(p.env.CRDs), len(installed))
	// The manager's own namespace, as an install has it: the token signing
	// Secret lives there (without it every POST /v1/token answers 503).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlplane.InstallNamespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fail(fmt.Errorf("creating namespace %s: %w", controlplane.InstallNamespace, err))
	}

	// kube-controller-manager, with its own identity. CRDs are already in,
	// so its garbage collector watches them from the start.
	user, err := p.env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, &rest.Config{})
	if err != nil {
		return fail(err)
	}
	kcmKubeconfig := filepath.Join(p.dir, "kube-controller-manager.kubeconfig")
	if err := controlplane.WriteKubeconfig(kcmKubeconfig, "kube-controller-manager", user.Config()); err != nil {
		return fail(err)
	}
	p.kcm = &controlplane.ControllerManager{
		Path:       filepath.Join(bin, "kube-controller-manager"),
		Kubeconfig: kcmKubeconfig,
		LogFile:    filepath.Join(p.dir, "kube-controller-manager.log"),
	}
	logln("starting kube-controller-manager (garbage collector, namespace controller) ...")
	if err := p.kcm.Start(); err != nil {
		return fail(err)
	}
	_ = p.watchdog.Add(p.kcm.Pid())
	_ = p.record("kube-controller-manager", p.kcm.Pid())
	if err := controlplane.WaitForGarbageCollector(ctx, c, "default", 90*time.Second, p.kcm.Exited); err != nil {
		return fail(err)
	}
	if err := controlplane.WaitForAdmissionPolicies(ctx, c, "default", time.Minute); err != nil {
		return fail(err)
	}

	logln("building the manager (go build -o bin/manager .) ...")
	select {
	case err := <-built:
		if err != nil {
			return fail(err)
		}
	case <-ctx.Done():
		return 0
	}

	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + metricsAddr,
		// Plain HTTP on loopback: curl needs no token here. In a cluster
		// the manager serves HTTPS on :8443 for keyward-metrics-reader.
		"--metrics-secure=false",
		"--health-probe-bind-address=" + probeAddr,
		"--verify-bind-address=" + verifyAddr,
		"--verify-grpc-bind-address=" + grpcAddr,
		// Plaintext on loopback: the token issuer (and the discovery
		// document's URLs) default to http://<verify address>, and
		// loopback clients may get tokens over plaintext.
		"--verify-tls=off",
	}, managerArgs...)
	p.manager = exec.Command(managerBin, args...)
	p.manager.Stdout, p.manager.Stderr = os.Stdout, os.Stderr
	// Its own process group: only we signal it, exactly once, on teardown.
	p.manager.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.manager.Start(); err != nil {
		return fail(err)
	}
	_ = p.watchdog.Add(p.manager.Process.Pid)
	_ = p.record("manager", p.manager.Process.Pid)
	var mgrErr error
	p.mgrDone = make(chan struct{})
	go func() { mgrErr = p.manager.Wait(); close(p.mgrDone) }()

	if ready := waitReady(ctx, p.mgrDone, "http://"+probeAddr+"/readyz", 2*time.Minute); !ready {
		select {
		case <-p.mgrDone:
			return fail(fmt.Errorf("the manager exited during start-up: %v", mgrErr))
		default:
		}
		if ctx.Err() != nil {
			return 0
		}
		logln("the manager is not ready after 2 minutes; carrying on (see its log above)")
	}
	printUsage(root, bin, cfg.Host, time.Since(begin), managerArgs)

	select {
	case <-ctx.Done():
		return 0
	case <-p.mgrDone:
		if ctx.Err() != nil {
			return 0
		}
		return fail(fmt.Errorf("the manager exited: %v", mgrErr))
	}
}

// stop tears down in reverse order: manager, kube-controller-manager, then
// kube-apiserver and etcd (gracefully, so etcd's data stays consistent).
func (p *procs) stop() error {
	var errs []error
	if p.manager != nil && p.manager.Process != nil {
		errs = append(errs, controlplane.StopProcessGroup(p.manager.Process.Pid, p.mgrDone, 20*time.Second))
	}
	if p.kcm != nil {
		errs = append(errs, p.kcm.Stop(15*time.Second))
	}
	if p.env != nil {
		errs = append(errs, p.env.Stop())
	}
	if p.watchdog != nil {
		p.watchdog.Release()
	}
	for _, f := range p.logs {
		_ = f.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return err // keep the pid file: the next run cleans up what is left
	}
	_ = os.Remove(p.pidFile())
	return nil
}

func (p *procs) logFile(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(p.dir, name))
	if err == nil {
		p.logs = append(p.logs, f)
	}
	return f, err
}

func (p *procs) pidFile() string { return filepath.Join(p.dir, "pids") }

// record appends "role pid exe" to bin/local/pids so that a later run can
// tell a live instance from processes a killed run left behind.
func (p *procs) record(role string, pid int) error {
	exe := controlplane.ProcessExe(pid)
	p.records = append(p.records, fmt.Sprintf("%s %d %s", role, pid, exe))
	return os.WriteFile(p.pidFile(), []byte(strings.Join(p.records, "\n")+"\n"), 0o644)
}

// cleanStale refuses to run next to a live instance, and stops processes a
// killed instance left behind (only those whose pid still runs the recorded
// executable, so a reused pid is never touched).
func (p *procs) cleanStale() error {
	f, err := os.Open(p.pidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	type entry struct {
		role, exe string
		pid       int
	}
	var stale []entry
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) != 3 {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || pid == os.Getpid() || controlplane.ProcessExe(pid) != fields[2] {
			continue // gone, or the pid now belongs to something else
		}
		if fields[0] == "local" {
			_ = f.Close()
			return fmt.Errorf("make local is already running (pid %d); stop it first (Ctrl-C in its terminal, or kill %d)", pid, pid)
		}
		stale = append(stale, entry{role: fields[0], exe: fields[2], pid: pid})
	}
	_ = f.Close()
	// Reverse start order: the manager first, etcd last (kube-apiserver
	// shuts down slowly once etcd is gone).
	for i := len(stale) - 1; i >= 0; i-- {
		e := stale[i]
		logln("stopping %s (pid %d) left behind by an earlier run", e.role, e.pid)
		_ = syscall.Kill(-e.pid, syscall.SIGTERM)
		_ = syscall.Kill(e.pid, syscall.SIGTERM)
		deadline := time.Now().Add(15 * time.Second)
		// Not our child, so no Wait: poll. A zombie has no exe link, so it
		// counts as gone.
		alive := func() bool { return controlplane.ProcessExe(e.pid) == e.exe }
		for alive() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if alive() {
			_ = syscall.Kill(-e.pid, syscall.SIGKILL)
			_ = syscall.Kill(e.pid, syscall.SIGKILL)
		}
	}
	return os.Remove(p.pidFile())
}

// checkPortsFree fails early, with a clear message, when the manager's
// metrics or probe port is taken (unless the arguments move them).
func checkPortsFree(managerArgs []string) error {
	joined := strings.Join(managerArgs, " ")
	for flag, addr := range map[string]string{"--metrics-bind-address": metricsAddr, "--health-probe-bind-address": probeAddr,
		"--verify-bind-address": verifyAddr, "--verify-grpc-bind-address": grpcAddr} {
		if strings.Contains(joined, flag) {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s (the manager's %s) is in use: stop what listens there, or pass ARGS=%s=127.0.0.1:<port>", addr, flag, flag)
		}
		_ = l.Close()
	}
	return nil
}

// waitReady polls the manager's readiness endpoint until it answers 200, the
// manager exits, ctx ends or timeout passes.
func waitReady(ctx context.Context, exited <-chan struct{}, url string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		if resp, err := hc.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-exited:
			return false
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// metricsWhere says where the manager's metrics are, given the arguments
// the user added after make local's own (the last occurrence of a flag wins).
func metricsWhere(managerArgs []string) string {
	addr, secure := metricsAddr, false
	for _, a := range managerArgs {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "metrics-bind-address":
			addr = value
		case "metrics-secure":
			secure = !hasValue || value == "true"
		}
	}
	switch {
	case addr == "0":
		return "off (--metrics-bind-address=0)"
	case secure:
		return "https://" + addr + "/metrics (a bearer token of a user or ServiceAccount bound to keyward-metrics-reader)"
	default:
		return "http://" + addr + "/metrics (plain HTTP, --metrics-secure=false)"
	}
}

// services says where the verifier, its gRPC front end and the token
// service listen, given the arguments the user added after make local's own
// (the last occurrence of a flag wins).
type services struct{ verify, grpc, tokens string }

func servicesWhere(managerArgs []string) services {
	addr, gaddr, scheme, tokens, issuer := verifyAddr, grpcAddr, "http", true, ""
	for _, a := range managerArgs {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "verify-bind-address":
			addr = value
		case "verify-grpc-bind-address":
			gaddr = value
		case "verify-tls":
			scheme = "https"
			if value == "off" {
				scheme = "http"
			}
		case "tokens":
			tokens = !hasValue || value == "true"
		case "token-issuer":
			issuer = value
		}
	}
	s := services{verify: "off (--verify-bind-address=0)", grpc: "off (--verify-grpc-bind-address=0)", tokens: "off (--tokens=false)"}
	if addr != "0" {
		base := scheme + "://" + addr
		s.verify = base + "  (POST /v1/verify, GET /v1/auth)"
		if issuer == "" { // the verifier's default for a loopback bind address
			issuer = base
		}
		if tokens {
			s.tokens = fmt.Sprintf("%s/v1/token  (issuer %s;\n"+
				"              discovery %s/.well-known/openid-configuration)", base, issuer, issuer)
		}
	} else if tokens {
		s.tokens = "off (served by the verifier, --verify-bind-address=0)"
	}
	if gaddr != "0" {
		s.grpc = gaddr + "  (Envoy ext_authz gRPC)"
	}
	return s
}

func printUsage(root, bin, host string, took time.Duration, managerArgs []string) {
	kubectl := rel(root, filepath.Join(bin, "kubectl"))
	svc := servicesWhere(managerArgs)
	fmt.Fprintf(os.Stderr, `
================================================================================
 Keyward is running on a local control plane (ready in %.1fs).

 In another terminal, from %s:
   export KUBECONFIG=$PWD/bin/local/kubeconfig
   kubectl apply -f config/samples/
   kubectl get keyward

 %s is the kubectl matching this API server (%s).
 API server:  %s        etcd data: bin/local/etcd (kept across runs;
              delete bin/local to start afresh)
 Verifier:    %s
              %s
 Tokens:      %s
 Metrics:     %s
 Probes:      http://%s/healthz and /readyz
 Logs:        bin/local/{etcd,kube-apiserver,kube-controller-manager}.log
 Ctrl-C stops the manager, kube-controller-manager, kube-apiserver and etcd.
================================================================================

`, took.Seconds(), root, kubectl, filepath.Base(filepath.Dir(filepath.Join(bin, "kubectl"))), host, svc.verify, svc.grpc, svc.tokens, metricsWhere(managerArgs), probeAddr)
}
