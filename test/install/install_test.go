// Package install installs Keyward the two ways a cluster gets it besides
// kustomize — the Helm chart (rendered with the Helm Go SDK, applied with
// kubectl) and dist/install.yaml — on a control plane of its own, runs the
// manager binary with exactly the rights each installation gives its
// ServiceAccount and the arguments of its Deployment, issues a key, scrapes
// the metrics as Prometheus would, and uninstalls.
package install

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"

	"keyward.dev/keyward/internal/devenv/controlplane"
	"keyward.dev/keyward/test/harness/chartrender"
	"keyward.dev/keyward/test/harness/testenv"
)

var (
	env        *testenv.Env
	root       string
	kubectlBin string
	kubeconfig string
	managerBin string
)

const (
	timeout  = 60 * time.Second
	interval = 200 * time.Millisecond
)

func TestInstall(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Install suite: the Helm chart and dist/install.yaml on a real control plane")
}

var _ = BeforeSuite(func() {
	root = testenv.RepoRoot()
	bin, err := controlplane.BinDir(root)
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(bin, "kubectl")
	env, err = testenv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(controlplane.WriteKubeconfig(kubeconfig, "install", env.Config)).To(Succeed())
	managerBin, err = gexec.Build("keyward.dev/keyward")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(gexec.CleanupBuildArtifacts)
})

func kubectlIn(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func kubectl(args ...string) string {
	GinkgoHelper()
	out, errOut, err := kubectlIn("", args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl %s\n%s", strings.Join(args, " "), errOut)
	return out
}

func freeAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// deploymentIn returns the manager Deployment of a rendered installation.
func deploymentIn(manifests string) *appsv1.Deployment {
	GinkgoHelper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	for {
		var d appsv1.Deployment
		if err := dec.Decode(&d); err != nil {
			break
		}
		if d.Kind == "Deployment" {
			return &d
		}
	}
	Fail("no Deployment in the installation")
	return nil
}

// startManager runs the manager binary as the Deployment's ServiceAccount
// would run in its namespace, with the Deployment's arguments, every listener
// moved to a free loopback port (the verifier's to that port on every
// address, so that its default issuer names the Service as in a cluster).
// It returns the probe, metrics and verifier addresses.
func startManager(d *appsv1.Deployment) (probe, metrics, verify string) {
	GinkgoHelper()
	sa := "system:serviceaccount:" + d.Namespace + ":" + d.Spec.Template.Spec.ServiceAccountName
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + d.Namespace, "system:authenticated"}}
	path := filepath.Join(GinkgoT().TempDir(), "manager.kubeconfig")
	Expect(controlplane.WriteKubeconfig(path, "manager", cfg)).To(Succeed())
	args := []string{"--kubeconfig=" + path}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		name, value, _ := strings.Cut(a, "=")
		if strings.HasSuffix(name, "-bind-address") && value != "0" {
			a = name + "=" + freeAddr()
			switch name {
			case "--health-probe-bind-address":
				probe = strings.TrimPrefix(a, name+"=")
			case "--metrics-bind-address":
				metrics = strings.TrimPrefix(a, name+"=")
			case "--verify-bind-address":
				verify = strings.TrimPrefix(a, name+"=")
				_, port, _ := net.SplitHostPort(verify)
				a = name + "=:" + port
			}
		}
		args = append(args, a)
	}
	cmd := exec.Command(managerBin, args...)
	cmd.Env = append(os.Environ(), "POD_NAME=keyward-test", "POD_NAMESPACE="+d.Namespace)
	session, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		session.Terminate()
		Eventually(session, 30*time.Second).Should(gexec.Exit())
	})
	Eventually(func() int {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}, timeout, interval).Should(Equal(http.StatusOK))
	return probe, metrics, verify
}

// verifierTLS checks what the Deployment's default TLS gives gateways: the
// CA published in the ConfigMap <service>-ca of namespace ns verifies the
// certificate served at addr for <service>.<ns>.svc; the discovery
// document's URLs are https under that name; a key of keyNS gets a token
// over TLS and the plaintext port answers none. It returns the served
// certificate.
func verifierTLS(ns, service, addr, keyNS string) []byte {
	GinkgoHelper()
	var bundle string
	Eventually(func() string {
		bundle, _, _ = kubectlIn("", "get", "-n", ns, "configmap", service+"-ca", "-o", `jsonpath={.data.ca\.crt}`)
		return bundle
	}, timeout, interval).ShouldNot(BeEmpty(), "the CA ConfigMap %s/%s-ca", ns, service)
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM([]byte(bundle))).To(BeTrue())
	host := service + "." + ns + ".svc"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}}}

	resp, err := hc.Get("https://" + addr + "/.well-known/openid-configuration")
	Expect(err).NotTo(HaveOccurred(), "the served certificate verifies against the published CA for %s", host)
	defer func() { _ = resp.Body.Close() }()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	served := resp.TLS.PeerCertificates[0].Raw
	var disc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
		JWKSURI       string `json:"jwks_uri"`
	}
	Expect(json.NewDecoder(resp.Body).Decode(&disc)).To(Succeed())
	_, port, _ := net.SplitHostPort(addr)
	issuer := "https://" + net.JoinHostPort(host, port)
	Expect(disc.Issuer).To(Equal(issuer))
	Expect(disc.TokenEndpoint).To(Equal(issuer + "/v1/token"))
	Expect(disc.JWKSURI).To(HavePrefix(issuer + "/"))
	// The discovery URLs answer at the Service's address (here: addr).
	jwks, err := hc.Get("https://" + addr + strings.TrimPrefix(disc.JWKSURI, issuer))
	Expect(err).NotTo(HaveOccurred())
	_ = jwks.Body.Close()
	Expect(jwks.StatusCode).To(Equal(http.StatusOK))

	keyID := kubectl("get", "-n", keyNS, "accesskey/checkout", "-o", "jsonpath={.status.keyID}")
	key := kubectl("get", "-n", keyNS, "secret/checkout", "-o", "jsonpath={.data.accessKey}")
	secret, err := base64.StdEncoding.DecodeString(key)
	Expect(err).NotTo(HaveOccurred())
	token := func(c *http.Client, url string) int {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("grant_type=client_credentials"))
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(keyID, string(secret))
		resp, err := c.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	Eventually(func() int { return token(hc, "https://"+addr+"/v1/token") }, timeout, interval).Should(Equal(http.StatusOK))
	Expect(token(&http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/v1/token")).NotTo(Equal(http.StatusOK), "a token over plaintext")
	return served
}

// issueKey creates a tenant, an Application and a key in a new namespace
// and waits for the key's Secret.
func issueKey(ns string) {
	GinkgoHelper()
	kubectl("create", "namespace", ns)
	out, errOut, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: shop}
spec: {}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: checkout}
spec: {application: shop}
`, "apply", "-n", ns, "-f", "-")
	Expect(err).NotTo(HaveOccurred(), "%s\n%s", out, errOut)
	kubectl("wait", "-n", ns, "--for=condition=Ready", "accesskey/checkout", "--timeout=60s")
	Expect(kubectl("get", "-n", ns, "accesskey/checkout", "-o", "jsonpath={.status.phase}")).To(Equal("Active"))
	Expect(kubectl("get", "-n", ns, "secret/checkout", "-o", "jsonpath={.type}")).To(Equal("keyward.dev/access-key"))
}

// scrape GETs /metrics over HTTPS with a ServiceAccount's token.
func scrape(addr, token string) (int, string) {
	GinkgoHelper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the manager's self-signed certificate
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, ""
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var _ = Describe("Installing Keyward", Ordered, func() {
	It("with the Helm chart: kubectl apply of its rendering; the manager runs as the chart's ServiceAccount, issues a key and serves metrics to keyward-metrics-reader", func() {
		const ns = "platform"
		manifests, err := chartrender.Render(chartrender.Dir(root), "acme", ns, map[string]any{
			"replicaCount":            1,
			"apiKeysEnabledByDefault": false,
			"extraArgs":               []any{"--zap-log-level=debug"},
		})
		Expect(err).NotTo(HaveOccurred())
		kubectl("create", "namespace", ns)
		out, errOut, err := kubectlIn(manifests, "apply", "--server-side", "--force-conflicts", "--field-manager=helm", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), "%s\n%s", out, errOut)
		for _, obj := range []string{"deployment/acme-keyward-controller-manager", "serviceaccount/acme-keyward-controller-manager",
			"service/acme-keyward-controller-manager-metrics", "service/acme-keyward-verifier", "role/acme-keyward-leader-election"} {
			kubectl("get", "-n", ns, obj)
		}
		kubectl("get", "clusterrolebinding/acme-keyward-manager", "clusterrole/acme-keyward-manager", "clusterrole/keyward-metrics-reader")

		d := deploymentIn(manifests)
		Expect(d.Spec.Template.Spec.ServiceAccountName).To(Equal("acme-keyward-controller-manager"))
		_, metrics, verify := startManager(d)
		issueKey("shop-helm")
		verifierTLS(ns, "acme-keyward-verifier", verify, "shop-helm")

		By("Prometheus' ServiceAccount, bound to keyward-metrics-reader, scrapes over HTTPS; anonymous callers get 401")
		kubectl("-n", ns, "create", "serviceaccount", "prometheus")
		kubectl("create", "clusterrolebinding", "prometheus-keyward", "--clusterrole=keyward-metrics-reader", "--serviceaccount="+ns+":prometheus")
		code, _ := scrape(metrics, "")
		Expect(code).To(Equal(http.StatusUnauthorized))
		token := kubectl("-n", ns, "create", "token", "prometheus")
		Eventually(func() string {
			code, body := scrape(metrics, token)
			if code != http.StatusOK {
				return ""
			}
			var lines []string // the reconcile counts, for a readable failure
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "controller_runtime_reconcile_total{") || strings.HasPrefix(l, "keyward_") {
					lines = append(lines, l)
				}
			}
			return strings.Join(lines, "\n")
		}, timeout, interval).Should(And(
			MatchRegexp(`(?m)^controller_runtime_reconcile_total\{controller="accesskey",result="[a-z_]+"\} [1-9]`),
			MatchRegexp(`(?m)^keyward_access_keys\{application="shop",namespace="shop-helm",phase="Active"\} 1$`),
			MatchRegexp(`(?m)^keyward_admission_policies_installed 1`)))

		By("uninstalling as helm uninstall does: everything but the kept CRDs; the key stays")
		kept := 0
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
		var deletable []string
		for {
			var obj struct {
				Kind     string
				Metadata struct {
					Name        string
					Namespace   string
					Annotations map[string]string
				}
			}
			if err := dec.Decode(&obj); err != nil {
				break
			}
			if obj.Kind == "" {
				continue
			}
			if obj.Metadata.Annotations["helm.sh/resource-policy"] == "keep" {
				kept++
				continue
			}
			deletable = append(deletable, strings.ToLower(obj.Kind)+"/"+obj.Metadata.Name)
		}
		Expect(kept).To(Equal(3), "the three CRDs are kept")
		kubectl(append([]string{"delete", "-n", ns, "--wait=true"}, deletable...)...)
		Expect(kubectl("get", "-n", "shop-helm", "accesskey/checkout", "-o", "jsonpath={.status.phase}")).To(Equal("Active"))
		Expect(kubectl("get", "-n", "shop-helm", "secret/checkout", "-o", "name")).To(Equal("secret/checkout\n"))
	})

	It("with dist/install.yaml: one kubectl apply; the manager runs as its ServiceAccount and issues a key; deleting it deletes every key and Secret", func() {
		installer := filepath.Join(root, "dist", "install.yaml")
		data, err := os.ReadFile(installer)
		Expect(err).NotTo(HaveOccurred())
		kubectl("apply", "--server-side", "--force-conflicts", "-f", installer)
		d := deploymentIn(string(data))
		Expect(d.Namespace + "/" + d.Spec.Template.Spec.ServiceAccountName).To(Equal("keyward-system/keyward-controller-manager"))
		Expect(d.Spec.Template.Spec.Containers[0].Image).To(Equal("keyward/manager:dev"))
		_, _, verify := startManager(d)
		issueKey("shop-installer")
		served := verifierTLS("keyward-system", "keyward-verifier", verify, "shop-installer")

		By("a second replica serves the same certificate")
		_, _, verify2 := startManager(d)
		Expect(verifierTLS("keyward-system", "keyward-verifier", verify2, "shop-installer")).To(Equal(served))

		By("kubectl delete -f install.yaml removes the CRDs, and with them every key and, through the garbage collector, every Secret")
		kubectl("delete", "-f", installer, "--ignore-not-found", "--wait=true")
		Eventually(func() string {
			out, _, _ := kubectlIn("", "get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=keyward", "-o", "name")
			return out
		}, 2*timeout, interval).Should(BeEmpty())
		_, errOut, err := kubectlIn("", "get", "crd", "accesskeys.keyward.dev")
		Expect(err).To(HaveOccurred())
		Expect(errOut).To(ContainSubstring("NotFound"))
	})
})
