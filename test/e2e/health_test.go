package e2e

import (
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
	"k8s.io/client-go/rest"

	"keyward.dev/keyward/internal/devenv/controlplane"
)

// get returns the status code and body of an HTTP GET (0 when unreachable).
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var _ = Describe("A manager that cannot watch says so and still stops on SIGTERM", func() {
	It("is not ready, logs it, counts it, records an Event on its Pod, and exits within its shutdown timeout", func() {
		By("a manager whose ServiceAccount may record Events but read nothing")
		kubectl("create", "namespace", "stalled")
		kubectl("-n", "stalled", "create", "serviceaccount", "blind")
		kubectl("-n", "stalled", "create", "role", "events", "--verb=create,patch", "--resource=events,events.events.k8s.io")
		kubectl("-n", "stalled", "create", "rolebinding", "events", "--role=events", "--serviceaccount=stalled:blind")
		kubectl("-n", "stalled", "run", "keyward-stalled", "--image=keyward/manager:dev", "--restart=Never")

		dir := GinkgoT().TempDir()
		blindKubeconfig := filepath.Join(dir, "blind.kubeconfig")
		asBlind := rest.CopyConfig(env.Config)
		asBlind.Impersonate = rest.ImpersonationConfig{
			UserName: "system:serviceaccount:stalled:blind",
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:stalled", "system:authenticated"},
		}
		Expect(controlplane.WriteKubeconfig(blindKubeconfig, "blind", asBlind)).To(Succeed())

		probe, metrics := freeAddr(), freeAddr()
		cmd := exec.Command(managerBin,
			"--kubeconfig="+blindKubeconfig,
			"--metrics-bind-address="+metrics,
			"--metrics-secure=false",
			"--health-probe-bind-address="+probe,
			"--graceful-shutdown-timeout=2s",
		)
		cmd.Env = append(cmd.Environ(), "POD_NAME=keyward-stalled", "POD_NAMESPACE=stalled")
		stalled, err := gexec.Start(cmd, GinkgoWriter, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { stalled.Kill() })

		By("readiness fails, and says which watches keep failing")
		Eventually(func() int { code, _ := httpGet("http://" + probe + "/healthz"); return code }, timeout, interval).Should(Equal(http.StatusOK))
		Consistently(func() int { code, _ := httpGet("http://" + probe + "/readyz"); return code }, 3*time.Second, interval).
			Should(Equal(http.StatusInternalServerError))
		Eventually(func() string { _, body := httpGet("http://" + probe + "/readyz?verbose"); return body }, timeout, interval).
			Should(And(ContainSubstring("[-]watches failed"), ContainSubstring("[-]informers-synced failed")))

		By("a log line, a metric and an Event")
		Eventually(stalled.Err, timeout).Should(gbytes.Say("keeps failing"))
		Eventually(func() string { _, body := httpGet("http://" + metrics + "/metrics"); return body }, timeout, interval).
			Should(MatchRegexp(`(?m)^keyward_watch_failing [1-9]`))
		Eventually(func() string {
			return kubectl("-n", "stalled", "get", "events", "--field-selector=involvedObject.name=keyward-stalled", "-o", "jsonpath={.items[*].reason}")
		}, timeout, interval).Should(ContainSubstring("WatchFailing"))

		By("SIGTERM ends it within the shutdown timeout, caches or not")
		start := time.Now()
		stalled.Terminate()
		Eventually(stalled, 15*time.Second).Should(gexec.Exit())
		AddReportEntry("stalled manager exit after SIGTERM", time.Since(start).Round(10*time.Millisecond).String())
		Expect(strings.Contains(string(stalled.Err.Contents()), "kw_")).To(BeFalse())
	})
})

var _ = Describe("Every TenantSettings says whether Keyward's admission policies are installed", Serial, func() {
	It("is True with the shipped policies, False naming what is missing, and True again once restored", func() {
		ns := newNamespace()
		_, _, err := kubectlIn(`apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default, namespace: `+ns+`}
spec: {apiKeysEnabled: true}
`, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		condition := func() string {
			return kubectl("-n", ns, "get", "tenantsettings", "default", "-o",
				`jsonpath={.status.conditions[?(@.type=="AdmissionPoliciesInstalled")].status}/{.status.conditions[?(@.type=="AdmissionPoliciesInstalled")].message}`)
		}
		Eventually(condition, timeout, interval).Should(HavePrefix("True/"))

		kubectl("delete", "validatingadmissionpolicybinding", "keyward-accesskey-delete")
		DeferCleanup(func() {
			kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join(root, "config", "admission", "policies.yaml"))
		})
		Eventually(condition, timeout, interval).Should(And(HavePrefix("False/"), ContainSubstring("ValidatingAdmissionPolicyBinding keyward-accesskey-delete")))

		kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join(root, "config", "admission", "policies.yaml"))
		Eventually(condition, timeout, interval).Should(HavePrefix("True/"))
	})
})
