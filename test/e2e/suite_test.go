// Package e2e drives Keyward as its users do: Keyward is installed with
// `kubectl apply -k config/default`, the real manager binary (built from
// main.go, with its flags and cache settings) runs with exactly the rights
// that installation gives its ServiceAccount, against a real kube-apiserver,
// etcd and kube-controller-manager, and every step goes through the real
// kubectl.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	"k8s.io/client-go/rest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env        *testenv.Env
	ctx        = context.Background()
	root       string
	kubectlBin string
	kubeconfig string
	// manager is the running manager binary; its output is kept for the
	// key-material leak check.
	manager *gexec.Session
	// managerBin is the manager built from main.go.
	managerBin string
	// verifyAddr is the manager's verification API (plain HTTP on loopback).
	verifyAddr string
	// metricsAddr is where the manager serves metrics: HTTPS, for
	// keyward-metrics-reader only, as a cluster runs it.
	metricsAddr string
)

const (
	timeout  = 60 * time.Second
	interval = 200 * time.Millisecond
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end suite: the manager binary and kubectl on a real control plane")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	root = testenv.RepoRoot()
	bin, err := controlplane.BinDir(root)
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(bin, "kubectl")

	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })

	dir := GinkgoT().TempDir()
	kubeconfig = filepath.Join(dir, "kubeconfig")
	Expect(controlplane.WriteKubeconfig(kubeconfig, "e2e", env.Config)).To(Succeed())

	By("installing Keyward as a platform team would: kubectl apply -k config/default")
	kubectl("apply", "--server-side", "--force-conflicts", "-k", filepath.Join(root, "config", "default"))

	// The manager runs with the rights config/default gives its
	// ServiceAccount, and nothing more: the admin certificate impersonates it.
	managerKubeconfig := filepath.Join(dir, "manager.kubeconfig")
	asManager := rest.CopyConfig(env.Config)
	asManager.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:keyward-system:keyward-controller-manager",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:keyward-system", "system:authenticated"},
	}
	Expect(controlplane.WriteKubeconfig(managerKubeconfig, "keyward-manager", asManager)).To(Succeed())

	By("building the manager from main.go")
	managerBin, err = gexec.Build("keyward.dev/keyward")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)

	By("starting the manager as a cluster would run it")
	probe := freeAddr()
	verifyAddr, metricsAddr = freeAddr(), freeAddr()
	cmd := exec.Command(managerBin,
		"--kubeconfig="+managerKubeconfig,
		"--leader-elect",
		"--leader-election-namespace=keyward-system",
		"--metrics-bind-address="+metricsAddr, // HTTPS, authenticated: the default
		"--health-probe-bind-address="+probe,
		"--admission-check-interval=1s",
		"--verify-bind-address="+verifyAddr,
		"--verify-grpc-bind-address="+freeAddr(),
		// Plaintext on loopback for the suite's clients; test/install
		// proves the default (TLS, a self-signed certificate).
		"--verify-tls=off",
		// The highest verbosity, so the secret-hygiene spec sees every
		// log line there is (controller-runtime logs up to V(10)).
		"--zap-log-level=10",
		// On here, so the suite proves the flag; the controllers suite
		// covers the default (off).
		"--api-keys-enabled-by-default",
	)
	manager, err = gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		manager.Terminate()
		Eventually(manager, 30*time.Second).Should(gexec.Exit())
	})
	Eventually(func() int {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}, timeout, interval).Should(Equal(http.StatusOK))
})

// kubectl runs the real kubectl against the test API server and returns its
// standard output; it fails the spec when kubectl fails.
func kubectl(args ...string) string {
	GinkgoHelper()
	out, errOut, err := kubectlResult(args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl %s\n%s", strings.Join(args, " "), errOut)
	return out
}

// kubectlResult runs kubectl and returns standard output, standard error and
// the error, for commands that are expected to fail.
func kubectlResult(args ...string) (string, string, error) { return kubectlIn("", args...) }

// kubectlIn is kubectl with stdin, for manifests written inline.
func kubectlIn(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func newNamespace() string {
	GinkgoHelper()
	ns := fmt.Sprintf("e2e-%d", time.Now().UnixNano()%1_000_000_000)
	kubectl("create", "namespace", ns)
	return ns
}

func freeAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}
