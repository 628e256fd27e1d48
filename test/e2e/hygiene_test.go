package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"keyward.dev/keyward/internal/keyformat"
)

// Secret hygiene: the whole lifecycle of keys (issue, rotate with and
// without grace, deactivate, reactivate, expire and extend, revoke),
// verification through /v1/verify and /v1/auth with good and bad keys,
// whois through the kubectl plugin, and requests the API server refuses —
// with the manager at its highest log verbosity. Then everything a
// non-Secret reader could see is collected: the manager's whole output,
// every Event (core and events.k8s.io), every AccessKey, Application and
// TenantSettings of every namespace, every error string returned to a
// client (kubectl, the plugin, the verifier), every verifier answer with its
// headers, and the metrics endpoint. No key ever issued, no secret part of
// one, and no base64 of either may appear in any of it. The keys are
// compared, never printed; a failure names the place only.
// secretPiece is the length of the pieces of a secret the hygiene check
// looks for: long enough never to occur by chance (60 bits), short enough
// to fit a hex dump's 16-character lines.
const secretPiece = 12

var _ = Describe("Secret hygiene: no key material anywhere but its Secret", Ordered, func() {
	var (
		ns string
		// material: every key seen in a Secret, by key ID; never printed.
		material = map[string]keyformat.Key{}
		// seen is everything collected that a non-Secret reader could see,
		// by where it came from.
		seen = map[string]*strings.Builder{}
	)
	record := func(where, text string) {
		b := seen[where]
		if b == nil {
			b = &strings.Builder{}
			seen[where] = b
		}
		b.WriteString(text)
		b.WriteByte('\n')
	}
	// harvest reads every Keyward Secret of the namespace as the admin and
	// remembers its key.
	harvest := func() {
		GinkgoHelper()
		out := kubectl("get", "secrets", "-n", ns, "-l", "app.kubernetes.io/managed-by=keyward",
			"-o", `go-template={{range .items}}{{index .data "accessKey" | base64decode}}{{"\n"}}{{end}}`)
		for _, line := range strings.Fields(out) {
			k, err := keyformat.Parse(line)
			Expect(err).NotTo(HaveOccurred(), "a Keyward Secret holds a malformed key")
			material[k.ID] = k
		}
	}
	secretKey := func(name string) keyformat.Key {
		GinkgoHelper()
		raw := kubectl("get", "secret", name, "-n", ns, "-o", `go-template={{index .data "accessKey" | base64decode}}`)
		k, err := keyformat.Parse(raw)
		Expect(err).NotTo(HaveOccurred())
		material[k.ID] = k
		return k
	}
	// refusedBy runs kubectl expecting a refusal and records its message.
	refusedBy := func(stdin string, args ...string) {
		GinkgoHelper()
		out, errOut, err := kubectlIn(stdin, args...)
		Expect(err).To(HaveOccurred(), "kubectl %s succeeded", strings.Join(args, " "))
		record("kubectl errors", out+errOut)
	}
	// call sends a request to the verifier and records the whole answer.
	call := func(method, path, body string, hdr map[string]string) int {
		GinkgoHelper()
		req, err := http.NewRequest(method, "http://"+verifyAddr+path, strings.NewReader(body))
		Expect(err).NotTo(HaveOccurred())
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var h bytes.Buffer
		_ = resp.Header.Write(&h)
		record("verifier answers", fmt.Sprintf("%d\n%s\n%s", resp.StatusCode, h.String(), b))
		return resp.StatusCode
	}
	verify := func(key string) (int, map[string]any) {
		GinkgoHelper()
		body, _ := json.Marshal(map[string]string{"key": key})
		req, _ := http.NewRequest(http.MethodPost, "http://"+verifyAddr+"/v1/verify", bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		record("verifier answers", string(b))
		var res map[string]any
		_ = json.Unmarshal(b, &res)
		return resp.StatusCode, res
	}
	reason := func(key string) string {
		GinkgoHelper()
		code, res := verify(key)
		Expect(code).To(Equal(http.StatusOK))
		r, _ := res["reason"].(string)
		return r
	}

	BeforeAll(func() {
		ns = newNamespace()
		kubectlMust := func(manifest string) {
			GinkgoHelper()
			_, errOut, err := kubectlIn(manifest, "apply", "-n", ns, "-f", "-")
			Expect(err).NotTo(HaveOccurred(), errOut)
		}
		kubectlMust(`apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true, maxKeysPerOwner: 10}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: hygiene}
spec:
  maxAccessKeys: 10
  scopes: [{name: orders, access: ReadWrite}]
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: plain}
spec: {application: hygiene, rotation: {gracePeriod: 0s}}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: graceful}
spec:
  application: hygiene
  rotation: {gracePeriod: 1h}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: doomed}
spec: {application: hygiene}
`)
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey", "--all", "--timeout=60s")
		harvest()
	})

	It("runs the whole lifecycle and verification at the highest log verbosity", func() {
		plain := secretKey("plain")
		graceful := secretKey("graceful")
		doomed := secretKey("doomed")
		Expect(reason(plain.Plaintext())).To(Equal("ok"))

		By("rotation without (gracePeriod 0s) and with a grace period")
		kubectl("annotate", "-n", ns, "accesskey/plain", "keyward.dev/rotate=r1")
		kubectl("annotate", "-n", ns, "accesskey/graceful", "keyward.dev/rotate=r1")
		eventuallyJSONPath(ns, "accesskey/plain", ".status.rotation.lastRequest").Should(Equal("r1"))
		eventuallyJSONPath(ns, "accesskey/graceful", ".status.previousKey.keyID").Should(Equal(graceful.ID))
		Eventually(func() string { return secretKey("plain").ID }, timeout, interval).ShouldNot(Equal(plain.ID))
		Eventually(func() string { return secretKey("graceful").ID }, timeout, interval).ShouldNot(Equal(graceful.ID))
		harvest()
		Eventually(func() string { return reason(plain.Plaintext()) }, timeout, interval).Should(Equal("unknown"))
		Expect(reason(graceful.Plaintext())).To(Equal("ok"), "the previous key within its grace period")
		plain2 := secretKey("plain")
		Eventually(func() string { return reason(plain2.Plaintext()) }, timeout, interval).Should(Equal("ok"))

		By("deactivate and reactivate")
		kubectl("patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"state":"Inactive"}}`)
		eventuallyJSONPath(ns, "accesskey/plain", ".status.phase").Should(Equal("Inactive"))
		Eventually(func() string { return reason(plain2.Plaintext()) }, timeout, interval).Should(Equal("inactive"))
		kubectl("patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"state":"Active"}}`)
		eventuallyJSONPath(ns, "accesskey/plain", ".status.phase").Should(Equal("Active"))

		By("expire, then extend")
		kubectl("patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"expiresAt":"2020-01-01T00:00:00Z"}}`)
		eventuallyJSONPath(ns, "accesskey/plain", ".status.phase").Should(Equal("Expired"))
		Expect(reason(plain2.Plaintext())).To(Equal("expired"))
		kubectl("patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"expiresAt":"2099-01-01T00:00:00Z"}}`)
		eventuallyJSONPath(ns, "accesskey/plain", ".status.phase").Should(Equal("Active"))
		Eventually(func() string { return reason(plain2.Plaintext()) }, timeout, interval).Should(Equal("ok"))

		By("revoke")
		kubectl("patch", "-n", ns, "accesskey/doomed", "--type=merge", "-p", `{"spec":{"revoked":true}}`)
		eventuallyJSONPath(ns, "accesskey/doomed", ".status.phase").Should(Equal("Revoked"))
		Eventually(func() string { return reason(doomed.Plaintext()) }, timeout, interval).Should(Equal("revoked"))

		By("/v1/auth with good and bad keys (a handful, well within the guess limit)")
		wrong := keyformat.Key{ID: plain2.ID, Secret: graceful.Secret}
		Expect(call(http.MethodGet, "/v1/auth", "", map[string]string{"Authorization": "Bearer " + plain2.Plaintext()})).To(Equal(http.StatusOK))
		Expect(call(http.MethodGet, "/v1/auth", "", map[string]string{"X-API-Key": wrong.Plaintext()})).To(Equal(http.StatusUnauthorized))
		Expect(call(http.MethodGet, "/v1/auth", "", map[string]string{"Authorization": "Bearer " + doomed.Plaintext()})).To(Equal(http.StatusUnauthorized))
		Expect(call(http.MethodGet, "/v1/auth", "", map[string]string{"Authorization": "Bearer " + plain2.Plaintext()[:40]})).To(Equal(http.StatusUnauthorized))
		Expect(call(http.MethodGet, "/v1/auth?scope=orders&access=Sideways", "", map[string]string{"Authorization": "Bearer " + plain2.Plaintext()})).NotTo(Equal(http.StatusOK))
		Expect(call(http.MethodPost, "/v1/verify", `{"key":"`+plain2.Plaintext()+`","bogus":1}`, nil)).To(Equal(http.StatusBadRequest))
		Expect(call(http.MethodPost, "/v1/verify", `{"key":"`+plain2.Plaintext()+`",`, nil)).To(Equal(http.StatusBadRequest))
		Expect(call(http.MethodPost, "/v1/verify", `{"key":"`+plain2.Plaintext()+`","sourceIP":"`+strings.Repeat(" ", 9000)+`"}`, nil)).
			To(Equal(http.StatusRequestEntityTooLarge))

		By("requests the API server refuses, as kubectl reports them")
		refusedBy("", "patch", "-n", ns, "accesskey/doomed", "--type=merge", "-p", `{"spec":{"revoked":false}}`)
		refusedBy("", "patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"application":"other"}}`)
		refusedBy("", "patch", "-n", ns, "accesskey/plain", "--type=merge", "-p", `{"spec":{"expiresAt":"not-a-date"}}`)
		refusedBy("", "patch", "-n", ns, "accesskey/plain", "--as=dana", "--type=merge", "-p", `{"spec":{"revoked":true}}`)

		By("whois through the kubectl plugin")
		bin, err := gexec.Build("keyward.dev/keyward/cmd/kubectl-keyward")
		Expect(err).NotTo(HaveOccurred())
		pluginDir := filepath.Dir(bin)
		whois := func(stdin string) {
			cmd := exec.Command(kubectlBin, "keyward", "whois", "--kubeconfig="+kubeconfig)
			cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
			cmd.Stdin = strings.NewReader(stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			record("plugin output", stdout.String()+stderr.String())
		}
		whois(plain2.Plaintext() + "\n")
		whois(graceful.Plaintext() + "\n")
		whois(wrong.Plaintext() + "\n")
		whois(doomed.Plaintext() + "\n")
		Expect(seen["plugin output"].String()).To(ContainSubstring("plain"), "whois named the key")
		harvest()
	})

	It("leaves no issued key and no secret part of one anywhere but its Secret", func() {
		By("collecting every object but Secrets, every Event, the metrics and the manager's output")
		for _, kind := range []string{"accesskeys", "applications", "tenantsettings", "events", "events.events.k8s.io"} {
			record(kind, kubectl("get", kind, "-A", "-o", "json"))
		}
		metrics := scrapeAsMetricsReader()
		Expect(metrics).To(ContainSubstring("keyward_verify_requests_total"))
		record("metrics", metrics)
		record("manager output", string(manager.Out.Contents())+string(manager.Err.Contents()))
		Expect(seen["manager output"].Len()).To(BeNumerically(">", 10_000), "the manager logged at its highest verbosity")

		needles := func(k keyformat.Key) map[string]string {
			p := k.Plaintext()
			n := map[string]string{
				"the key": p, "its secret": k.Secret,
				"the key in base64":    base64.StdEncoding.EncodeToString([]byte(p)),
				"the key in base64url": base64.RawURLEncoding.EncodeToString([]byte(p)),
			}
			// Every 12-character piece of the secret: a hex dump (client-go
			// logs protobuf bodies so) shows it 16 characters to a line.
			for i := 0; i+secretPiece <= len(k.Secret); i++ {
				n[fmt.Sprintf("characters %d–%d of its secret", i, i+secretPiece)] = k.Secret[i : i+secretPiece]
			}
			return n
		}
		By("the detector finds what it looks for: the current keys are in their Secrets' JSON, base64-encoded")
		secretsJSON := kubectl("get", "secrets", "-n", ns, "-o", "json")
		found := 0
		for _, k := range material {
			if strings.Contains(secretsJSON, needles(k)["the key in base64"]) {
				found++
			}
		}
		Expect(found).To(Equal(2), "the detector must find the two current keys (plain, graceful) in their Secrets")

		checked, leaks := 0, 0
		for _, k := range material {
			checked++
			for what, needle := range needles(k) {
				for where, text := range seen {
					if strings.Contains(text.String(), needle) {
						leaks++
						AddReportEntry("LEAK", fmt.Sprintf("%s of key ID %s found in %s", what, k.ID, where))
					}
				}
			}
		}
		sizes := []string{}
		for where, text := range seen {
			sizes = append(sizes, fmt.Sprintf("%s: %d bytes", where, text.Len()))
		}
		AddReportEntry("secret hygiene", fmt.Sprintf("%d keys checked (each as key, secret, base64, base64url and every %d-character piece of the secret) in %d sources (%s); %d leaks",
			checked, secretPiece, len(seen), strings.Join(sizes, ", "), leaks))
		Expect(checked).To(BeNumerically(">=", 5), "3 issued, 2 rotated in (one revoked): all collected")
		Expect(leaks).To(BeZero(), "key material found outside its Secret (see the LEAK report entries)")
	})
})
