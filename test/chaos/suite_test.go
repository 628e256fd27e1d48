//go:build chaos

// Package chaos runs the manager binary under faults against a real control
// plane: SIGKILL at random moments during a burst of key operations. It is
// built only with the "chaos" tag (`make chaos`), on a fixed time budget,
// so `go test ./test/...` in `make test` does not run it.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env        *testenv.Env
	ctx        = context.Background()
	managerBin string
	kubeconfig string
)

func TestChaos(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Chaos suite: the manager binary killed, handed over and cut off, on a real control plane")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })

	// The namespace an install runs the manager in, where it keeps its
	// token signing Secret.
	Expect(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlplane.InstallNamespace}})).To(Succeed())

	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(controlplane.WriteKubeconfig(kubeconfig, "chaos", env.Config)).To(Succeed())

	managerBin, err = gexec.Build("keyward.dev/keyward")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
})

// managerProc is one run of the manager binary; its output goes to the
// Ginkgo writer only when a spec fails.
type managerProc struct {
	session          *gexec.Session
	verify, probe    string
	extra            []string
	out              *bytes.Buffer
	startedAt        time.Time
	restarts, killed int
}

// start runs the manager with fixed addresses (so a restart listens where
// the last run did) and the given extra flags.
func startManager(verify, probe string, extra ...string) *managerProc {
	GinkgoHelper()
	m := &managerProc{verify: verify, probe: probe, extra: extra, out: &bytes.Buffer{}}
	m.run()
	return m
}

func (m *managerProc) run() {
	GinkgoHelper()
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + m.probe,
		"--verify-bind-address=" + m.verify,
		"--verify-grpc-bind-address=0",
		// Plaintext: the suite's clients call the verifier on loopback
		// (test/install proves the default, TLS).
		"--verify-tls=off",
		"--graceful-shutdown-timeout=2s",
	}, m.extra...)
	s, err := gexec.Start(exec.Command(managerBin, args...), GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	m.session, m.startedAt = s, time.Now()
}

// kill sends SIGKILL and waits for the process to be gone.
func (m *managerProc) kill() {
	GinkgoHelper()
	m.session.Kill()
	Eventually(m.session, 10*time.Second).Should(gexec.Exit())
	m.killed++
}

// restart starts the manager again, as a kubelet would.
func (m *managerProc) restart() {
	GinkgoHelper()
	m.run()
	m.restarts++
}

func (m *managerProc) stop() {
	if m.session != nil && m.session.ExitCode() == -1 {
		m.session.Terminate()
		Eventually(m.session, 20*time.Second).Should(gexec.Exit())
	}
}

func (m *managerProc) ready() bool {
	resp, err := http.Get("http://" + m.probe + "/readyz")
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// verifyKey asks the manager's verifier about a key; it returns the reason
// ("" when the verifier could not be reached). The key is never printed.
func verifyKey(addr, key string) string {
	body, _ := json.Marshal(map[string]string{"key": key})
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Post("http://"+addr+"/v1/verify", "application/json", bytes.NewReader(body))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var res struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(b, &res) != nil {
		return ""
	}
	return res.Reason
}

func freeAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}
