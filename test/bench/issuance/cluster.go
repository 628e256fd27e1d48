package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/testenv"
)

// cluster is one fresh control plane (etcd, kube-apiserver,
// kube-controller-manager through test/harness/testenv) and, optionally, the
// manager binary running against it as a subprocess.
type cluster struct {
	env     *testenv.Env
	bin     string // control-plane binaries
	root    string
	clients *clients

	manager     *exec.Cmd
	managerDone chan struct{}
	managerLog  *os.File
	metricsAddr string
	watchdog    *controlplane.Watchdog
}

func startCluster(root string) (*cluster, error) {
	bin, err := controlplane.BinDir(root)
	if err != nil {
		return nil, err
	}
	env, err := testenv.Start()
	if err != nil {
		return nil, err
	}
	c := &cluster{env: env, bin: bin, root: root}
	if c.clients, err = newClients(env.Config); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return c, nil
}

// startManager runs bin/manager against this control plane (as the admin
// user) with the given extra flags and waits until it is ready.
func (c *cluster) startManager(ctx context.Context, managerBin, logPath string, args []string) error {
	dir := filepath.Dir(logPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := controlplane.WriteKubeconfig(kubeconfig, "keyward-bench", c.env.Config); err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	probeAddr, err := freeAddr()
	if err != nil {
		return err
	}
	c.metricsAddr = metricsAddr
	// The namespace an install runs the manager in: without it the manager
	// keeps retrying to create its token signing Secret there, and those
	// failed writes would be counted as the manager's (idle) writes.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlplane.InstallNamespace}}
	if err := c.env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if c.managerLog, err = os.Create(logPath); err != nil {
		return err
	}
	all := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + metricsAddr,
		"--metrics-secure=false", // plain HTTP on loopback: the harness scrapes without a token
		"--health-probe-bind-address=" + probeAddr,
	}, args...)
	c.manager = exec.Command(managerBin, all...)
	c.manager.Stdout, c.manager.Stderr = c.managerLog, c.managerLog
	c.manager.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.watchdog, err = controlplane.StartWatchdog(); err != nil {
		return err
	}
	if err := c.manager.Start(); err != nil {
		return err
	}
	_ = c.watchdog.Add(c.manager.Process.Pid)
	c.managerDone = make(chan struct{})
	go func() { _ = c.manager.Wait(); close(c.managerDone) }()

	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := hc.Get("http://" + probeAddr + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.managerDone:
			return fmt.Errorf("the manager exited during start-up (log %s)", logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the manager is not ready after 2 minutes (log %s)", logPath)
}

func (c *cluster) managerPid() int {
	if c.manager == nil || c.manager.Process == nil {
		return 0
	}
	return c.manager.Process.Pid
}

// managerAlive reports an error when the manager has exited.
func (c *cluster) managerAlive() error {
	if c.managerDone == nil {
		return nil
	}
	select {
	case <-c.managerDone:
		return fmt.Errorf("the manager exited unexpectedly (log %s)", c.managerLog.Name())
	default:
		return nil
	}
}

// stop stops the manager (if any), then the control plane.
func (c *cluster) stop() error {
	var err error
	if c.manager != nil && c.manager.Process != nil {
		err = controlplane.StopProcessGroup(c.manager.Process.Pid, c.managerDone, 15*time.Second)
	}
	if c.watchdog != nil {
		c.watchdog.Release()
	}
	if c.managerLog != nil {
		_ = c.managerLog.Close()
	}
	if e := c.env.Stop(); e != nil && err == nil {
		err = e
	}
	return err
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// --- server-side request counts ----------------------------------------------

// requestCounts is apiserver_request_total, keyed by "VERB group/resource[/subresource] code".
type requestCounts map[string]float64

// apiserverMetrics reads the API server's /metrics.
func (c *cluster) apiserverMetrics(ctx context.Context) (string, error) {
	cs, err := kubernetes.NewForConfig(c.env.Config)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the API server's /metrics: %w", err)
	}
	return string(raw), nil
}

// storageBytes is the size of etcd's database as the API server reports it.
func (c *cluster) storageBytes(ctx context.Context) (float64, error) {
	text, err := c.apiserverMetrics(ctx)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, s := range parseMetrics(text, "apiserver_storage_size_bytes") {
		total += s.value
	}
	return total, nil
}

// controlPlaneRSSKiB is the resident memory of etcd and kube-apiserver.
func (c *cluster) controlPlaneRSSKiB() map[string]int64 {
	out := map[string]int64{}
	for _, pid := range controlplane.ChildProcesses(filepath.Join(c.bin, "etcd"), filepath.Join(c.bin, "kube-apiserver")) {
		out[filepath.Base(controlplane.ProcessExe(pid))] += procStatusKiB(pid, "VmRSS")
	}
	return out
}

func (c *cluster) apiserverRequests(ctx context.Context) (requestCounts, error) {
	raw, err := c.apiserverMetrics(ctx)
	if err != nil {
		return nil, err
	}
	out := requestCounts{}
	for _, s := range parseMetrics(raw, "apiserver_request_total") {
		res := s.labels["resource"]
		if g := s.labels["group"]; g != "" {
			res = g + "/" + res
		}
		if sub := s.labels["subresource"]; sub != "" {
			res += "/" + sub
		}
		out[s.labels["verb"]+" "+res+" "+s.labels["code"]] += s.value
	}
	return out, nil
}

// writes returns the write requests in after-before, by "VERB resource", and
// the number of those answered 409 Conflict. Requests the harness makes
// itself (creating AccessKeys, Secrets for the memory step, namespaces,
// Applications, TenantSettings) and the API server's own lease renewals are
// left out; see docs/benchmarks.md for why the rest is the manager's.
func writes(before, after requestCounts) (byVerbResource map[string]float64, conflicts float64) {
	byVerbResource = map[string]float64{}
	for k, v := range after {
		d := v - before[k]
		if d <= 0 {
			continue
		}
		f := strings.Fields(k)
		if len(f) != 3 {
			continue
		}
		verb, res, code := f[0], f[1], f[2]
		switch verb {
		case "GET", "LIST", "WATCH", "WATCHLIST", "CONNECT":
			continue
		}
		if harnessWrite(verb, res) {
			continue
		}
		byVerbResource[verb+" "+res] += d
		if code == "409" {
			conflicts += d
		}
	}
	return byVerbResource, conflicts
}

func harnessWrite(verb, res string) bool {
	switch {
	case strings.HasPrefix(res, "coordination.k8s.io/leases"):
		return true // the API server's identity lease
	case verb == "POST" && (res == "keyward.dev/accesskeys" || res == "namespaces" ||
		res == "keyward.dev/applications" || res == "keyward.dev/tenantsettings"):
		return true
	}
	return false
}

// --- manager metrics -----------------------------------------------------------

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics returns the samples of one metric family from Prometheus text.
func parseMetrics(text, name string) []sample {
	var out []sample
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		s := sample{name: name, labels: map[string]string{}}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			for _, kv := range splitLabels(rest[1:end]) {
				k, v, ok := strings.Cut(kv, "=")
				if ok {
					s.labels[k] = strings.Trim(v, `"`)
				}
			}
			rest = rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue // another family with this prefix
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// managerMetrics is what the manager's own /metrics says.
type managerMetrics struct {
	reconciles map[string]float64 // by controller
	requests   map[string]float64 // client-side requests by method
}

func (c *cluster) scrapeManager() (managerMetrics, error) {
	m := managerMetrics{reconciles: map[string]float64{}, requests: map[string]float64{}}
	if c.metricsAddr == "" {
		return m, nil
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + c.metricsAddr + "/metrics")
	if err != nil {
		return m, err
	}
	defer func() { _ = resp.Body.Close() }()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		return m, err
	}
	for _, s := range parseMetrics(b.String(), "controller_runtime_reconcile_total") {
		m.reconciles[s.labels["controller"]] += s.value
	}
	for _, s := range parseMetrics(b.String(), "rest_client_requests_total") {
		m.requests[s.labels["method"]] += s.value
	}
	return m, nil
}

// --- processes ------------------------------------------------------------------

// procStatusKiB reads a field such as VmHWM or VmRSS (in KiB) of /proc/<pid>/status.
func procStatusKiB(pid int, field string) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// cpuSeconds is user+system CPU time of a process (clock ticks of 1/100 s,
// the Linux default).
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

// cpu is the CPU time of every process taking part, by role.
type cpu map[string]float64

func (c *cluster) cpuNow() cpu {
	out := cpu{"harness": cpuSeconds(os.Getpid())}
	for _, pid := range controlplane.ChildProcesses(
		filepath.Join(c.bin, "etcd"), filepath.Join(c.bin, "kube-apiserver"), filepath.Join(c.bin, "kube-controller-manager")) {
		out[filepath.Base(controlplane.ProcessExe(pid))] += cpuSeconds(pid)
	}
	if pid := c.managerPid(); pid != 0 {
		out["manager"] = cpuSeconds(pid)
	}
	return out
}

func (a cpu) since(b cpu) cpu {
	out := cpu{}
	for k, v := range a {
		out[k] = v - b[k]
	}
	return out
}
