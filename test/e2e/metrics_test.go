package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// scrape GETs the manager's /metrics over HTTPS (its certificate is
// self-signed), with a bearer token when token is not empty.
func scrape(token string) (int, string) {
	GinkgoHelper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the manager's self-signed certificate
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(body)
}

// scrapeAsMetricsReader returns the manager's metrics as Prometheus gets
// them: with the token of a ServiceAccount bound to keyward-metrics-reader.
func scrapeAsMetricsReader() string {
	GinkgoHelper()
	ns := newNamespace()
	kubectl("-n", ns, "create", "serviceaccount", "scraper")
	kubectl("create", "clusterrolebinding", ns+"-metrics", "--clusterrole=keyward-metrics-reader", "--serviceaccount="+ns+":scraper")
	DeferCleanup(func() { kubectl("delete", "clusterrolebinding", ns+"-metrics") })
	token := kubectl("-n", ns, "create", "token", "scraper")
	var body string
	Eventually(func() int {
		var code int
		code, body = scrape(token)
		return code
	}, timeout, interval).Should(Equal(http.StatusOK))
	return body
}

var _ = Describe("Prometheus scrapes the manager's metrics as kubebuilder secures them", func() {
	It("refuses anonymous and unauthorized callers, and serves keyward-metrics-reader", func() {
		ns := newNamespace()
		kubectl("-n", ns, "create", "serviceaccount", "prometheus")
		kubectl("-n", ns, "create", "serviceaccount", "stranger")
		kubectl("create", "clusterrolebinding", ns+"-metrics", "--clusterrole=keyward-metrics-reader", "--serviceaccount="+ns+":prometheus")
		DeferCleanup(func() { kubectl("delete", "clusterrolebinding", ns+"-metrics") })

		By("no token: 401")
		code, _ := scrape("")
		Expect(code).To(Equal(http.StatusUnauthorized))

		By("a token the API server does not know: refused, no metrics (controller-runtime's filter answers 500 when the TokenReview says invalid)")
		code, body := scrape("not-a-token")
		Expect(code).To(BeNumerically(">=", 400))
		Expect(body).NotTo(ContainSubstring("keyward_"))

		By("a valid ServiceAccount token without keyward-metrics-reader: 403 (SubjectAccessReview)")
		code, _ = scrape(kubectl("-n", ns, "create", "token", "stranger"))
		Expect(code).To(Equal(http.StatusForbidden))

		By("the ServiceAccount bound to keyward-metrics-reader: 200 and Keyward's metrics")
		token := kubectl("-n", ns, "create", "token", "prometheus")
		Eventually(func() string {
			code, body := scrape(token)
			if code != http.StatusOK {
				return ""
			}
			return body
		}, timeout, interval).Should(And(
			MatchRegexp(`(?m)^keyward_watch_failing 0$`),
			MatchRegexp(`(?m)^keyward_admission_policies_installed [1-9]`),
			MatchRegexp(`(?m)^controller_runtime_reconcile_total\{controller="accesskey"`),
		))
	})
})
