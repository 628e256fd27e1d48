package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/keyformat"
)

// jsonpath reads one field of an object with kubectl.
func jsonpath(ns, object, path string) string {
	GinkgoHelper()
	return kubectl("get", "-n", ns, object, "-o", "jsonpath={"+path+"}")
}

func eventuallyJSONPath(ns, object, path string) AsyncAssertion {
	return Eventually(func() string {
		out, _, _ := kubectlResult("get", "-n", ns, object, "-o", "jsonpath={"+path+"}")
		return out
	}, timeout, interval)
}

var _ = Describe("A newcomer applies config/samples with kubectl", func() {
	It("gets Active keys, their Secrets, and readable kubectl output", func() {
		ns := newNamespace()
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples"))
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey", "--all", "--timeout=60s")

		By("one Secret per key, of Keyward's type, holding a kw_ key")
		names := strings.Fields(kubectl("get", "secret", "-n", ns, "-l", "app.kubernetes.io/managed-by=keyward",
			"-o", "jsonpath={.items[*].metadata.name}"))
		Expect(names).To(ConsistOf("inventory-sync-main", "reports-reader", "inventory-sync-rotating"))
		Expect(jsonpath(ns, "secret/reports-reader", ".type")).To(Equal("keyward.dev/access-key"))
		Expect(jsonpath(ns, "secret/reports-reader", ".metadata.labels.app\\.kubernetes\\.io/part-of")).To(Equal("dashboard"))
		keyID := jsonpath(ns, "accesskey/inventory-reports-reader", ".status.keyID")
		Expect(kubectl("get", "secret", "reports-reader", "-n", ns, "-o", `go-template={{index .data "keyId" | base64decode}}`)).To(Equal(keyID))
		prefix := kubectl("get", "secret", "reports-reader", "-n", ns, "-o", `go-template={{slice (index .data "accessKey" | base64decode) 0 3}}`)
		Expect(prefix).To(Equal("kw_"))

		By("the owner stamped with the applying user, and the tenant's lifetime applied")
		me := kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		Expect(me).NotTo(BeEmpty())
		Expect(jsonpath(ns, "accesskey/inventory-sync-main", ".spec.owner")).To(Equal(me))
		issued, err := time.Parse(time.RFC3339, jsonpath(ns, "accesskey/inventory-sync-main", ".status.issuedAt"))
		Expect(err).NotTo(HaveOccurred())
		expires, err := time.Parse(time.RFC3339, jsonpath(ns, "accesskey/inventory-sync-main", ".status.expiresAt"))
		Expect(err).NotTo(HaveOccurred())
		Expect(expires.Sub(issued)).To(Equal(2160*time.Hour), "maxKeyLifetime of the sample TenantSettings")

		By("printer columns, the keyward category and field selectors")
		table := kubectl("get", "accesskeys", "-n", ns)
		Expect(table).To(MatchRegexp(`NAME\s+APPLICATION\s+OWNER\s+PHASE\s+KEY ID\s+EXPIRES\s+AGE`))
		Expect(table).To(MatchRegexp(`inventory-reports-reader\s+inventory-sync\s+\S+\s+Active\s+` + keyID[:8] + `\s`))
		Expect(kubectl("get", "keyward", "-n", ns, "-o", "name")).To(And(
			ContainSubstring("tenantsettings.keyward.dev/default"),
			ContainSubstring("application.keyward.dev/inventory-sync"),
			ContainSubstring("accesskey.keyward.dev/inventory-sync-rotating")))
		Expect(strings.Fields(kubectl("get", "ak", "-n", ns, "--field-selector", "status.keyID="+keyID, "-o", "name"))).
			To(ConsistOf("accesskey.keyward.dev/inventory-reports-reader"))
		Expect(strings.Fields(kubectl("get", "ak", "-n", ns, "--field-selector", "spec.owner="+me+",status.phase=Active", "-o", "name"))).
			To(HaveLen(3))
		eventuallyJSONPath(ns, "application/inventory-sync", ".status.keys.active").Should(Equal("3"))
		eventuallyJSONPath(ns, "tenantsettings/default", ".status.keys.total").Should(Equal("3"))

		By("rotating with kubectl annotate: a new key ID in the same Secret, the old one kept for the grace period")
		oldID := jsonpath(ns, "accesskey/inventory-sync-rotating", ".status.keyID")
		kubectl("annotate", "-n", ns, "accesskey/inventory-sync-rotating", "keyward.dev/rotate=2026-11-24", "--overwrite")
		eventuallyJSONPath(ns, "accesskey/inventory-sync-rotating", ".status.previousKey.keyID").Should(Equal(oldID))
		newID := jsonpath(ns, "accesskey/inventory-sync-rotating", ".status.keyID")
		Expect(newID).NotTo(Equal(oldID))
		Expect(kubectl("get", "secret", "inventory-sync-rotating", "-n", ns, "-o", `go-template={{index .data "keyId" | base64decode}}`)).To(Equal(newID))
		Eventually(func() string { return kubectl("describe", "accesskey", "inventory-sync-rotating", "-n", ns) }, timeout, interval).
			Should(MatchRegexp(`Normal\s+Rotated`))

		By("the quickstart's last two commands, run as README.md writes them: a key read from its Secret, verified with HTTP 200")
		script := quickstartVerify()
		dir := GinkgoT().TempDir()
		Expect(os.Symlink(kubectlBin, filepath.Join(dir, "kubectl"))).To(Succeed())
		// The README applies the samples to the context's namespace: here, ns.
		ctxKubeconfig := filepath.Join(dir, "kubeconfig")
		raw, err := os.ReadFile(kubeconfig)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(ctxKubeconfig, raw, 0o600)).To(Succeed())
		Expect(exec.Command(kubectlBin, "config", "set-context", "--current", "--namespace="+ns, "--kubeconfig="+ctxKubeconfig).Run()).To(Succeed())
		// make local's verifier is 127.0.0.1:8082; this suite's manager listens elsewhere.
		sh := exec.Command("bash", "-euo", "pipefail", "-c", strings.ReplaceAll(script, "127.0.0.1:8082", verifyAddr))
		sh.Env = append(os.Environ(), "KUBECONFIG="+ctxKubeconfig, "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		var stderr strings.Builder
		sh.Stderr = &stderr
		out, err := sh.Output()
		Expect(err).NotTo(HaveOccurred(), "%s\n%s", script, stderr.String())
		Expect(string(out)).To(MatchRegexp(`^\{"valid":true,"reason":"ok",.*"namespace":"`+ns+`","application":"inventory-sync",.*\}\nHTTP 200\n$`),
			"the verifier's answer (it holds the key ID, never the key)")
	})
})

// quickstartVerify returns the README quickstart's commands that read a key
// and verify it (the line that sets KEY and the curl after it), as written.
func quickstartVerify() string {
	GinkgoHelper()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	Expect(err).NotTo(HaveOccurred())
	var lines []string
	for _, l := range strings.Split(string(readme), "\n") {
		switch {
		case strings.HasPrefix(l, "KEY=$(kubectl get secret "):
			lines = []string{l}
		case len(lines) == 1 && strings.HasPrefix(l, "curl "):
			lines = append(lines, l)
		}
	}
	Expect(lines).To(HaveLen(2), "README.md's quickstart reads a key (KEY=$(kubectl get secret ...)) and verifies it with curl")
	return strings.Join(lines, "\n")
}

var _ = Describe("kubectl shows the API server's own validation messages", func() {
	It("refuses bad input with a clear error and changes nothing", func() {
		ns := newNamespace()
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "01_application.yaml"))
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "02_accesskey_basic.yaml"))

		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: too-many-networks}
spec:
  application: inventory-sync
  allowedNetworks: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, 10.0.0.5, 10.0.0.6, 10.0.0.7, 10.0.0.8, 10.0.0.9, 10.0.0.10, 10.0.0.11]
`, "apply", "-n", ns, "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("spec.allowedNetworks: Too many: 11: must have at most 10 items"))

		_, stderr, err = kubectlResult("patch", "-n", ns, "accesskey/inventory-sync-main", "--type=merge",
			"-p", `{"spec":{"application":"other"}}`)
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("spec.application is immutable"))
		Expect(jsonpath(ns, "accesskey/inventory-sync-main", ".spec.application")).To(Equal("inventory-sync"))

		_, stderr, err = kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: mine}
spec: {apiKeysEnabled: true}
`, "apply", "-n", ns, "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("TenantSettings must be named 'default'"))

	})
})

var _ = Describe("The manager flag --api-keys-enabled-by-default", func() {
	It("switches on tenants without TenantSettings; a TenantSettings can still switch its tenant off", func() {
		ns := newNamespace()
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "01_application.yaml"))
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "02_accesskey_basic.yaml"))
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey/inventory-sync-main", "--timeout=60s")

		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: false}
`, "apply", "-n", ns, "-f", "-")
		Expect(err).NotTo(HaveOccurred(), stderr)
		eventuallyJSONPath(ns, "accesskey/inventory-sync-main", `.status.conditions[?(@.type=="Ready")].reason`).
			Should(Equal("APIKeysDisabled"))
		Expect(jsonpath(ns, "tenantsettings/default", ".status.apiKeysEnabled")).To(Equal("false"))
	})
})

var _ = Describe("Roles, revocation and cascade deletion through kubectl", func() {
	It("lets only the tenant admin revoke, and deleting the Application removes keys and Secrets", func() {
		ns := newNamespace()
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "00_tenantsettings.yaml"))
		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "01_application.yaml"))
		kubectl("create", "rolebinding", "dana", "-n", ns, "--clusterrole=keyward-developer", "--user=dana")
		kubectl("create", "rolebinding", "tess", "-n", ns, "--clusterrole=keyward-tenant-admin", "--user=tess")

		Eventually(func() string {
			out, _, _ := kubectlResult("auth", "can-i", "revoke", "accesskeys", "-n", ns, "--as=tess")
			return strings.TrimSpace(out)
		}, timeout, interval).Should(Equal("yes"))
		out, _, _ := kubectlResult("auth", "can-i", "revoke", "accesskeys", "-n", ns, "--as=dana")
		Expect(strings.TrimSpace(out)).To(Equal("no"))

		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: dana-key}
spec: {application: inventory-sync}
`, "create", "-n", ns, "-f", "-", "--as=dana")
		Expect(err).NotTo(HaveOccurred(), stderr)
		Expect(jsonpath(ns, "accesskey/dana-key", ".spec.owner")).To(Equal("dana"))

		By("manifests that leave the owner out, server-side applied and then replaced: the stamped owner stays")
		for _, verb := range [][]string{{"apply", "--server-side", "--field-manager=gitops"}, {"replace"}} {
			_, stderr, err = kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: synced}
spec: {application: inventory-sync, description: by `+verb[0]+`}
`, append(verb, "-n", ns, "-f", "-", "--as=dana")...)
			Expect(err).NotTo(HaveOccurred(), stderr)
			Expect(jsonpath(ns, "accesskey/synced", ".spec.owner")).To(Equal("dana"))
			Expect(jsonpath(ns, "accesskey/synced", ".spec.description")).To(Equal("by " + verb[0]))
		}
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey/dana-key", "--timeout=60s")

		_, stderr, err = kubectlResult("patch", "-n", ns, "accesskey/dana-key", "--type=merge", "-p", `{"spec":{"revoked":true}}`, "--as=dana")
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("needs the revoke verb on accesskeys"))

		kubectl("patch", "-n", ns, "accesskey/dana-key", "--type=merge", "-p", `{"spec":{"revoked":true}}`, "--as=tess")
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Revoked", "accesskey/dana-key", "--timeout=60s")
		kubectl("wait", "-n", ns, "--for=delete", "secret/dana-key", "--timeout=60s")
		_, stderr, err = kubectlResult("patch", "-n", ns, "accesskey/dana-key", "--type=merge", "-p", `{"spec":{"revoked":false}}`, "--as=tess")
		Expect(err).To(HaveOccurred())
		Expect(stderr).To(ContainSubstring("revocation is irreversible"))

		kubectl("apply", "-n", ns, "-f", filepath.Join(root, "config", "samples", "02_accesskey_basic.yaml"))
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey/inventory-sync-main", "--timeout=60s")
		kubectl("delete", "-n", ns, "application/inventory-sync")
		kubectl("wait", "-n", ns, "--for=delete", "accesskey/inventory-sync-main", "accesskey/dana-key", "--timeout=60s")
		kubectl("wait", "-n", ns, "--for=delete", "secret/inventory-sync-main", "--timeout=60s")
	})
})

// After every spec: the manager never wrote a user's spec, and no key
// material is in the manager's output, in AccessKeys or in Events.
var _ = AfterSuite(func() {
	if env == nil || manager == nil {
		return
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name          string
				ManagedFields []struct {
					Manager     string
					Subresource string
					FieldsV1    json.RawMessage
				}
			}
		}
	}
	Expect(json.Unmarshal([]byte(kubectl("get", "accesskeys", "-A", "-o", "json", "--show-managed-fields")), &list)).To(Succeed())
	Expect(list.Items).NotTo(BeEmpty())
	managerWrote := false
	var managers []string
	for _, k := range list.Items {
		for _, f := range k.Metadata.ManagedFields {
			managers = append(managers, f.Manager+"/"+f.Subresource)
			if f.Manager != controllers.FieldOwner {
				continue
			}
			managerWrote = true
			if f.Subresource == "" {
				Expect(string(f.FieldsV1)).NotTo(ContainSubstring(`"f:spec"`), "the manager wrote the spec of %s", k.Metadata.Name)
			}
		}
	}
	Expect(managerWrote).To(BeTrue(), "the manager's writes are recorded under %q; managers seen: %v", controllers.FieldOwner, managers)

	keys := strings.Fields(kubectl("get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=keyward",
		"-o", `go-template={{range .items}}{{index .data "accessKey" | base64decode}}{{"\n"}}{{end}}`))
	Expect(keys).NotTo(BeEmpty())
	logs := string(manager.Out.Contents()) + string(manager.Err.Contents())
	Expect(logs).To(ContainSubstring("Issued"), "the manager logged its work")
	accessKeys := kubectl("get", "accesskeys", "-A", "-o", "yaml")
	events := kubectl("get", "events", "-A", "-o", "yaml")
	for _, k := range keys {
		parsed, err := keyformat.Parse(k)
		Expect(err).NotTo(HaveOccurred())
		for where, text := range map[string]string{"the manager's log": logs, "an AccessKey": accessKeys, "an Event": events} {
			Expect(strings.Contains(text, parsed.Secret)).To(BeFalse(), "key material found in %s", where)
		}
	}
})
