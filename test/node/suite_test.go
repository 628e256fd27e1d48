//go:build node

// Package node_test runs Keyward's Secrets in real Pods: a real kube-apiserver
// and etcd (test/harness/testenv), the manager's controllers and verifier in
// this process, and a real node (test/harness/node: containerd, a kubelet,
// Debian's runc) whose Pods mount a key's Secret as a volume and through
// envFrom and call the verifier with what they mounted. Needs root; run by
// `make test-node` (docs/development.md).
package node_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/serve"
	"keyward.dev/keyward/internal/verify"
	"keyward.dev/keyward/test/harness/node"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env    *testenv.Env
	k8s    client.Client
	ctx    context.Context
	cancel context.CancelFunc
	nd     *node.Node

	// verifyURL is the verifier's /v1/auth on the host end of the veth
	// pair, where the node's Pods reach it; reportURL is the collector's.
	verifyURL string
	reportURL string
	reports   = &collector{byPod: map[string][]report{}}

	managerLog *testenv.LogBuffer
)

const (
	timeout  = 30 * time.Second
	interval = 200 * time.Millisecond
	// syncFrequency is the kubelet's: a changed Secret reaches a mounted
	// volume within about this (6–11 s measured with 10s).
	syncFrequency = 10 * time.Second
	probeImage    = "localhost/keyward/keyprobe:node"
)

func TestNode(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Node suite (Pods on a real kubelet mount Keyward Secrets and call the verifier)")
}

var _ = BeforeSuite(func() {
	var log logr.Logger
	log, managerLog = testenv.CaptureLogs(GinkgoWriter)
	ctrl.SetLogger(log)
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s = env.Client

	root := testenv.RepoRoot()
	images := filepath.Join(root, "bin", "node", "images")
	start := time.Now()
	nd, err = node.Start(ctx, node.Options{
		Config:        env.Config,
		Images:        []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "keyprobe.tar")},
		SyncFrequency: syncFrequency,
	})
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("node %s Ready %s after start (node IP %s, host IP %s)\n", nd.Name, time.Since(start).Round(time.Millisecond), nd.NodeIP, nd.HostIP)

	// The verifier keeps its token signing keys there.
	Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "keyward-system"}})).To(Succeed())
	mgr, err := ctrl.NewManager(env.Config, env.ManagerOptions(log))
	Expect(err).NotTo(HaveOccurred())
	opts := controllers.DefaultOptions()
	opts.MaxRequeue = 30 * time.Second
	Expect(controllers.SetupWithManager(ctx, mgr, opts)).To(Succeed())
	vopts := serve.DefaultOptions()
	vopts.BindAddress = nd.HostAddr()
	vopts.GRPCBindAddress = "127.0.0.1:0"
	vopts.FlushInterval = 100 * time.Millisecond
	// The Pods call the verifier in plaintext on the node's own veth; the
	// verify suite covers the TLS listener.
	vopts.TLS = serve.TLSOff
	vf, err := serve.SetupWithManager(ctx, mgr, vopts)
	Expect(err).NotTo(HaveOccurred())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Eventually(func() net.Addr { return vf.HTTP.ListenAddr() }, timeout, interval).ShouldNot(BeNil())
	verifyURL = "http://" + vf.HTTP.ListenAddr().String() + verify.PathAuth

	ln, err := net.Listen("tcp", nd.HostAddr())
	Expect(err).NotTo(HaveOccurred())
	srv := &http.Server{Handler: reports, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	DeferCleanup(srv.Close)
	reportURL = "http://" + ln.Addr().String() + "/report"
})

var _ = AfterSuite(func() {
	if env != nil && k8s != nil {
		expectNoKeyMaterialLeaked()
	}
	if nd != nil {
		Expect(nd.Stop()).To(Succeed())
	}
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// report is what keyprobe (test/node/keyprobe) POSTs after each call.
type report struct {
	Pod         string    `json:"pod"`
	Source      string    `json:"source"`
	Status      int       `json:"status"`
	Fingerprint string    `json:"fingerprint"`
	Error       string    `json:"error,omitempty"`
	At          time.Time `json:"-"`
}

type collector struct {
	mu    sync.Mutex
	byPod map[string][]report
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rep report
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&rep); err != nil {
		http.Error(w, "bad report", http.StatusBadRequest)
		return
	}
	rep.At = time.Now()
	c.mu.Lock()
	c.byPod[rep.Pod] = append(c.byPod[rep.Pod], rep)
	c.mu.Unlock()
}

// since returns the reports of pod from source made at or after t.
func (c *collector) since(pod, source string, t time.Time) []report {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []report
	for _, r := range c.byPod[pod] {
		if r.Source == source && !r.At.Before(t) {
			out = append(out, r)
		}
	}
	return out
}

// last returns pod's latest report from source.
func (c *collector) last(pod, source string) (report, bool) {
	all := c.since(pod, source, time.Time{})
	if len(all) == 0 {
		return report{}, false
	}
	return all[len(all)-1], true
}
