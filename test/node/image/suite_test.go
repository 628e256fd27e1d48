//go:build node

// Package image_test runs the manager's own image on the test node as
// config/default deploys it: a Deployment of 2 replicas with their probes and
// leader election, its ServiceAccount's rights, in-cluster configuration.
// The parts a single test node lacks are stood in for in the suite: a
// kube-controller-manager with the deployment and replicaset controllers, a
// binder in place of kube-scheduler (one node), and a TLS proxy in place of
// kube-proxy and the API server's Service address (docs/development.md).
package image_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/node"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env     *testenv.Env
	k8s     client.Client
	ctx     context.Context
	cancel  context.CancelFunc
	nd      *node.Node
	kubectl func(args ...string) ([]byte, error)
)

const (
	timeout  = 90 * time.Second
	interval = 250 * time.Millisecond
	ns       = "keyward-system"
	// clusterIP is the kubernetes Service's address (envtest's
	// service-cluster-ip-range is 10.0.0.0/24).
	clusterIP = "10.0.0.1"
)

func TestImage(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Node image suite (the manager image on a real kubelet, as config/default deploys it)")
}

var _ = BeforeSuite(func() {
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s = env.Client
	root := testenv.RepoRoot()

	archive := filepath.Join(root, "dist", "keyward-manager-dev.tar")
	Expect(archive).To(BeAnExistingFile(), "run `make image-save` first")
	nd, err = node.Start(ctx, node.Options{
		Config: env.Config,
		Images: []string{filepath.Join(root, "bin", "node", "images", "pause.tar"), archive},
	})
	Expect(err).NotTo(HaveOccurred())
	// podman names it localhost/keyward/manager:dev; the Deployment's
	// keyward/manager:dev is docker.io/keyward/manager:dev to the CRI.
	Expect(nd.Ctr("images", "tag", "localhost/keyward/manager:dev", "docker.io/keyward/manager:dev")).To(Succeed())

	dir := GinkgoT().TempDir()
	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	Expect(controlplane.WriteKubeconfig(kubeconfig, "admin", env.Config)).To(Succeed())
	bin := os.Getenv("KUBEBUILDER_ASSETS")
	kubectl = func(args ...string) ([]byte, error) {
		return exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	}
	startControllers(bin, kubeconfig)
	go bind()

	// In-cluster clients reach https://10.0.0.1:443 (KUBERNETES_SERVICE_HOST).
	caPEM := startInClusterProxy()
	Expect(nd.RouteService(clusterIP, 443, inClusterAddr)).To(Succeed())

	// config/default as it is, plus what the ServiceAccount admission
	// plugin (off in envtest) would add to its Pods: the API access volume.
	overlay := filepath.Join(dir, "overlay")
	Expect(os.Mkdir(overlay, 0o700)).To(Succeed())
	base, err := filepath.Rel(overlay, filepath.Join(root, "config", "default"))
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(strings.ReplaceAll(apiAccessOverlay, "BASE", base)), 0o600)).To(Succeed())
	out, err := kubectl("apply", "--server-side", "--force-conflicts", "-k", overlay)
	Expect(err).NotTo(HaveOccurred(), string(out))
	// What the root-ca-cert-publisher would write, with the proxy's CA.
	Expect(k8s.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kube-root-ca.crt"},
		Data: map[string]string{"ca.crt": string(caPEM)}})).To(Succeed())
})

var _ = AfterSuite(func() {
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

// startControllers runs a kube-controller-manager with the deployment and
// replicaset controllers (testenv's runs the garbage collector).
func startControllers(bin, kubeconfig string) {
	GinkgoHelper()
	logFile := filepath.Join(nd.LogDir, "kube-controller-manager.log")
	log, err := os.Create(logFile)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(filepath.Join(bin, "kube-controller-manager"), "--kubeconfig="+kubeconfig,
		"--controllers=deployment,replicaset", "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
		"--use-service-account-credentials=false")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	Expect(cmd.Start()).To(Succeed())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = log.Close(); close(done) }()
	wd, err := controlplane.StartWatchdog() // kills it if this process dies
	Expect(err).NotTo(HaveOccurred())
	_ = wd.Add(cmd.Process.Pid)
	DeferCleanup(func() {
		_ = controlplane.StopProcessGroup(cmd.Process.Pid, done, 10*time.Second)
		wd.Release()
	})
}

// bind puts every unscheduled Pod on the node, as kube-scheduler would with
// one node.
func bind() {
	for ctx.Err() == nil {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(ns)); err == nil {
			for i := range pods.Items {
				p := &pods.Items[i]
				if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
					_ = k8s.SubResource("binding").Create(ctx, p, &corev1.Binding{
						ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
						Target:     corev1.ObjectReference{Kind: "Node", Name: nd.Name},
					})
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apiAccessOverlay adds the kube-api-access projected volume the
// ServiceAccount admission plugin adds to every Pod, next to the Deployment's
// own volumes (the serving certificate's /tmp).
const apiAccessOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - BASE
patches:
  - target:
      kind: Deployment
      name: keyward-controller-manager
    patch: |-
      - op: add
        path: /spec/template/spec/volumes/-
        value:
          name: kube-api-access
          projected:
            defaultMode: 420
            sources:
              - serviceAccountToken: {expirationSeconds: 3607, path: token}
              - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
              - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts/-
        value: {name: kube-api-access, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
`

var inClusterAddr string

// startInClusterProxy serves TLS for 10.0.0.1 (a CA of its own, published
// as kube-root-ca.crt) on the host end of the veth and passes each request,
// with the Pod's own ServiceAccount token, to kube-apiserver. It returns the
// CA's PEM.
func startInClusterProxy() []byte {
	GinkgoHelper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node-suite-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())
	ca, err := x509.ParseCertificate(caDER)
	Expect(err).NotTo(HaveOccurred())
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(clusterIP)}, DNSNames: []string{"kubernetes.default.svc"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	Expect(err).NotTo(HaveOccurred())

	target, err := url.Parse(env.Config.Host)
	Expect(err).NotTo(HaveOccurred())
	roots := x509.NewCertPool()
	Expect(roots.AppendCertsFromPEM(env.Config.CAData)).To(BeTrue())
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = target.Host },
		FlushInterval: -1, // watches stream
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: target.Hostname()},
			ForceAttemptHTTP2: true},
	}
	ln, err := net.Listen("tcp", nd.HostAddr())
	Expect(err).NotTo(HaveOccurred())
	inClusterAddr = ln.Addr().String()
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	DeferCleanup(srv.Close)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}
