package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"

	"keyward.dev/keyward/internal/keyformat"
)

// The kubectl plugin, invoked as users invoke it: `kubectl keyward ...`,
// found by kubectl's own plugin discovery on PATH, as impersonated users
// with the shipped roles. Key material is never printed: keys read from
// Secrets are compared by key ID and hash only.
var _ = Describe("The kubectl plugin (kubectl keyward) through real kubectl", Ordered, func() {
	var pluginDir, ns string
	// rotatedOut is dana-key's key before the rotate spec: the previous key
	// during the grace period. Never printed.
	var rotatedOut keyformat.Key

	// plugin runs `kubectl keyward args...` with stdin; the plugin's
	// directory comes first on PATH.
	plugin := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.Command(kubectlBin, append(append([]string{"keyward"}, args...), "--kubeconfig="+kubeconfig)...)
		cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	// ok runs the plugin and fails the spec when it fails.
	ok := func(args ...string) string {
		GinkgoHelper()
		out, errOut, err := plugin("", args...)
		Expect(err).NotTo(HaveOccurred(), "kubectl keyward %s\n%s", strings.Join(args, " "), errOut)
		return out
	}
	// refused runs the plugin, expects a non-zero exit and one line on
	// stderr, and returns that line.
	refused := func(stdin string, args ...string) string {
		GinkgoHelper()
		out, errOut, err := plugin(stdin, args...)
		// Standard output is not shown: for reveal it would be a key.
		Expect(err).To(HaveOccurred(), "kubectl keyward %s succeeded (%d bytes on stdout)", strings.Join(args, " "), len(out))
		var exit *exec.ExitError
		Expect(err).To(BeAssignableToTypeOf(exit))
		Expect(err.(*exec.ExitError).ExitCode()).NotTo(BeZero())
		line := strings.TrimSpace(errOut)
		Expect(strings.Split(line, "\n")).To(HaveLen(1), "one line on stderr, got:\n%s", errOut)
		Expect(line).To(HavePrefix("error: "))
		return line
	}
	// secretKey reads the key in a Secret as the admin, parsed; it is
	// never printed.
	secretKey := func(name string) keyformat.Key {
		GinkgoHelper()
		raw := kubectl("get", "secret", name, "-n", ns, "-o", `go-template={{index .data "accessKey" | base64decode}}`)
		k, err := keyformat.Parse(raw)
		Expect(err).NotTo(HaveOccurred())
		return k
	}
	// noSecretIn fails when text holds the secret of k.
	noSecretIn := func(k keyformat.Key, texts ...string) {
		GinkgoHelper()
		for _, t := range texts {
			Expect(strings.Contains(t, k.Secret)).To(BeFalse(), "the plugin printed key material")
		}
	}
	canI := func(user string, verbResource ...string) string {
		out, _, _ := kubectlResult(append(append([]string{"auth", "can-i"}, verbResource...), "-n", ns, "--as="+user)...)
		return strings.TrimSpace(out)
	}

	BeforeAll(func() {
		By("building the plugin, as go install would")
		bin, err := gexec.Build("keyward.dev/keyward/cmd/kubectl-keyward")
		Expect(err).NotTo(HaveOccurred())
		pluginDir = filepath.Dir(bin)
		Expect(filepath.Base(bin)).To(Equal("kubectl-keyward"))
		Expect(os.Symlink(bin, filepath.Join(pluginDir, "kubectl_complete-keyward"))).To(Succeed())

		ns = newNamespace()
		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true, maxKeysPerOwner: 20}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: billing}
spec: {maxAccessKeys: 20, team: payments}
`, "apply", "-n", ns, "-f", "-")
		Expect(err).NotTo(HaveOccurred(), stderr)

		By("dana and erin are developers, tess the tenant admin; only dana may read Secrets (a Role of its own)")
		kubectl("create", "rolebinding", "dana", "-n", ns, "--clusterrole=keyward-developer", "--user=dana")
		kubectl("create", "rolebinding", "erin", "-n", ns, "--clusterrole=keyward-developer", "--user=erin")
		kubectl("create", "rolebinding", "tess", "-n", ns, "--clusterrole=keyward-tenant-admin", "--user=tess")
		kubectl("create", "role", "secret-reader", "-n", ns, "--verb=get", "--resource=secrets")
		kubectl("create", "rolebinding", "dana-secrets", "-n", ns, "--role=secret-reader", "--user=dana")
		Eventually(func() string { return canI("dana", "get", "secrets") }, timeout, interval).Should(Equal("yes"))
		Eventually(func() string { return canI("tess", "revoke", "accesskeys") }, timeout, interval).Should(Equal("yes"))
		Eventually(func() string { return canI("erin", "update", "accesskeys") }, timeout, interval).Should(Equal("yes"))
		Expect(canI("erin", "get", "secrets")).To(Equal("no"))

		_, stderr, err = kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: dana-key}
spec: {application: billing}
`, "create", "-n", ns, "-f", "-", "--as=dana")
		Expect(err).NotTo(HaveOccurred(), stderr)
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey/dana-key", "--timeout=60s")
	})

	It("status: a table of the namespace's keys, one key in detail with its Events, JSON, and clear errors", func() {
		keyID := jsonpath(ns, "accesskey/dana-key", ".status.keyID")

		table := ok("status", "-n", ns, "--as", "dana")
		Expect(table).To(MatchRegexp(`NAME\s+PHASE\s+REASON\s+APPLICATION\s+OWNER\s+KEY ID\s+EXPIRES IN\s+LAST USED\s+PREVIOUS KEY\s+SECRET\s+MESSAGE`))
		Expect(table).To(MatchRegexp(`dana-key\s+Active\s+Issued\s+billing\s+dana\s+` + keyID[:8] + `\s+never\s+never\s+<none>\s+dana-key\s+`))

		detail := ok("status", "dana-key", "-n", ns, "--as", "dana")
		Expect(detail).To(MatchRegexp(`Phase:\s+Active\n`))
		Expect(detail).To(MatchRegexp(`Owner:\s+dana\n`))
		Expect(detail).To(MatchRegexp(`Key ID:\s+` + keyID[:8] + ` \(` + keyID + `\)\n`))
		Expect(detail).To(MatchRegexp(`Secret:\s+dana-key\n`))
		Expect(detail).To(MatchRegexp(`Events:\s+<you may not list events in namespace `+ns+`>\n`),
			"developers may not list Events; status says so instead of failing")

		By("the tenant admin's kubeconfig (system:masters here) sees the Events")
		Eventually(func() string { return ok("status", "dana-key", "-n", ns) }, timeout, interval).
			Should(MatchRegexp(`Normal\s+Issued\s+`))

		By("-o json prints the AccessKey as kubectl get does")
		var fromPlugin, fromKubectl map[string]any
		Expect(json.Unmarshal([]byte(ok("status", "dana-key", "-n", ns, "-o", "json", "--as", "dana")), &fromPlugin)).To(Succeed())
		Expect(json.Unmarshal([]byte(kubectl("get", "accesskey", "dana-key", "-n", ns, "-o", "json")), &fromKubectl)).To(Succeed())
		Expect(fromPlugin["status"]).To(Equal(fromKubectl["status"]))
		Expect(fromPlugin["spec"]).To(Equal(fromKubectl["spec"]))
		Expect(fromPlugin["kind"]).To(Equal("AccessKey"))

		Expect(refused("", "status", "no-such-key", "-n", ns, "--as", "dana")).
			To(Equal(`error: accesskey "no-such-key" not found in namespace "` + ns + `"`))
		Expect(refused("", "status", "-o", "xml", "-n", ns)).To(ContainSubstring(`unknown output format "xml"`))
		Expect(refused("", "status", "-n", ns, "-l", "team in (")).To(HavePrefix(`error: -l "team in (": `))
		Expect(refused("", "status", "-n", ns, "--as", "nobody")).To(ContainSubstring(`cannot list resource "accesskeys"`))
	})

	It("rotate --grace --wait: a developer gets a new key ID, the grace period is set in the same write", func() {
		before := secretKey("dana-key")
		rotatedOut = before
		out := ok("rotate", "dana-key", "--grace", "1h", "--wait", "-n", ns, "--as", "dana")
		m := regexp.MustCompile(`old key ID: (\S+)\n\s+new key ID: (\S+)\n\s+the old key verifies until (\S+)`).FindStringSubmatch(out)
		Expect(m).To(HaveLen(4), "rotate printed:\n%s", out)
		oldID, newID := m[1], m[2]
		Expect(oldID).To(Equal(before.ID))
		Expect(newID).NotTo(Equal(oldID))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.keyID")).To(Equal(newID))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.previousKey.keyID")).To(Equal(oldID))
		Expect(jsonpath(ns, "accesskey/dana-key", ".spec.rotation.gracePeriod")).To(Equal("1h0m0s"))
		until, err := time.Parse(time.RFC3339, m[3])
		Expect(err).NotTo(HaveOccurred())
		Expect(until).To(BeTemporally("~", time.Now().Add(time.Hour), time.Minute))
		Expect(secretKey("dana-key").ID).To(Equal(newID))

		By("a fresh, unique rotation request, acted on; the grace period was the only spec change")
		request := jsonpath(ns, "accesskey/dana-key", `.metadata.annotations.keyward\.dev/rotate`)
		Expect(request).To(MatchRegexp(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ-[0-9a-f]{12}$`))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.rotation.lastRequest")).To(Equal(request))
		Expect(jsonpath(ns, "accesskey/dana-key", ".metadata.generation")).To(Equal("2"), "one spec write: the grace period")
	})

	It("whois names the AccessKey of a key read from its Secret: current, previous within its grace period, unknown when forged", func() {
		current := secretKey("dana-key")
		previousID := jsonpath(ns, "accesskey/dana-key", ".status.previousKey.keyID")
		Expect(previousID).NotTo(BeEmpty())
		Expect(previousID).NotTo(Equal(current.ID))

		By("the current key, searched in all namespaces (the default)")
		out, errOut, err := plugin(current.Plaintext()+"\n", "whois")
		Expect(err).NotTo(HaveOccurred(), errOut)
		noSecretIn(current, out, errOut)
		Expect(out).To(MatchRegexp(`Key ID:\s+` + current.ID + `\n`))
		Expect(out).To(MatchRegexp(`Which:\s+current key\n`))
		Expect(out).To(MatchRegexp(`Namespace:\s+` + ns + `\n`))
		Expect(out).To(MatchRegexp(`AccessKey:\s+dana-key\n`))
		Expect(out).To(MatchRegexp(`Application:\s+billing\n`))
		Expect(out).To(MatchRegexp(`Owner:\s+dana\n`))
		Expect(out).To(MatchRegexp(`Phase:\s+Active\n`))

		By("as the developer, in the namespace given with -n")
		out, errOut, err = plugin(current.Plaintext(), "whois", "-n", ns, "--as", "dana", "-o", "json")
		Expect(err).NotTo(HaveOccurred(), errOut)
		noSecretIn(current, out, errOut)
		var res struct{ KeyID, Namespace, Name, Which string }
		Expect(json.Unmarshal([]byte(out), &res)).To(Succeed())
		Expect(res).To(Equal(struct{ KeyID, Namespace, Name, Which string }{current.ID, ns, "dana-key", "current"}))

		By("the developer without -n: may list AccessKeys neither in all namespaces nor in the kubeconfig's namespace, nor namespaces")
		Expect(refused(current.Plaintext(), "whois", "--as", "dana")).To(Equal(
			"error: you may list AccessKeys neither in all namespaces nor in namespace default, and may not list namespaces: name a namespace you may read with -n"))

		By("the rotated-out key, within its grace period: previous, with its end")
		old := rotatedOut
		Expect(old.ID).To(Equal(previousID))
		out, errOut, err = plugin(old.Plaintext(), "whois")
		Expect(err).NotTo(HaveOccurred(), errOut)
		noSecretIn(old, out, errOut)
		Expect(out).To(MatchRegexp(`Key ID:\s+` + old.ID + `\n`))
		Expect(out).To(MatchRegexp(`Which:\s+previous key \(rotated out\), verifies until \S+ \(in 5\dm\)\n`))
		Expect(out).To(MatchRegexp(`AccessKey:\s+dana-key\n`))

		By("forged keys: unknown, exit code 1")
		forged, err := keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		Expect(refused(forged.Plaintext(), "whois")).To(HavePrefix("error: unknown: no AccessKey you can see has this key ID and secret (searched all namespaces)"))
		sameID := keyformat.Key{ID: old.ID, Secret: forged.Secret}
		Expect(refused(sameID.Plaintext(), "whois")).To(HavePrefix("error: unknown:"), "the right key ID with a wrong secret")
		Expect(refused("kw_not-a-key\n", "whois")).To(HavePrefix("error: not a Keyward key"))
		Expect(refused("", "whois", "kw_as_an_argument")).To(ContainSubstring("never from an argument"))
	})

	It("deactivate and activate: the same key comes back", func() {
		keyID := jsonpath(ns, "accesskey/dana-key", ".status.keyID")
		Expect(ok("deactivate", "dana-key", "-n", ns, "--as", "dana")).
			To(HavePrefix("accesskey " + ns + "/dana-key deactivated (spec.state: Inactive): phase Inactive, reason Inactive"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.phase")).To(Equal("Inactive"))
		Expect(ok("activate", "dana-key", "-n", ns, "--as", "dana")).
			To(HavePrefix("accesskey " + ns + "/dana-key activated (spec.state: Active): phase Active, reason Issued"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.phase")).To(Equal("Active"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.keyID")).To(Equal(keyID))
	})

	It("extend --until and --by (with days); a key that never expires needs --until", func() {
		Expect(refused("", "extend", "dana-key", "--by", "30d", "-n", ns, "--as", "dana")).
			To(Equal("error: accesskey " + ns + "/dana-key never expires, so there is nothing to extend: use --until to give it an expiry"))
		until := time.Now().Add(10 * 24 * time.Hour).UTC().Truncate(time.Second)
		out := ok("extend", "dana-key", "--until", until.Format(time.RFC3339), "-n", ns, "--as", "dana")
		Expect(out).To(ContainSubstring("phase Active"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.expiresAt")).To(Equal(until.Format(time.RFC3339)))

		out = ok("extend", "dana-key", "--by", "30d", "-n", ns, "--as", "dana")
		want := until.Add(30 * 24 * time.Hour).Format(time.RFC3339)
		Expect(out).To(ContainSubstring("now expires at " + want + " (in 39d)"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.expiresAt")).To(Equal(want))

		Expect(refused("", "extend", "dana-key", "--by", "3 weeks", "-n", ns)).To(ContainSubstring(`"3 weeks" is not a duration such as 30d, 1d12h, 90m`))
		Expect(refused("", "extend", "dana-key", "--by", "1d", "--until", want, "-n", ns)).To(ContainSubstring("exactly one of --by"))
	})

	It("reveal prints the key from its Secret to a user who may read it, and says which permission is missing otherwise", func() {
		out, errOut, err := plugin("", "reveal", "dana-key", "-n", ns, "--as", "dana")
		Expect(err).NotTo(HaveOccurred(), errOut)
		Expect(errOut).To(BeEmpty())
		Expect(strings.HasSuffix(out, "\n")).To(BeTrue())
		revealed, err := keyformat.Parse(strings.TrimSuffix(out, "\n"))
		Expect(err).NotTo(HaveOccurred(), "reveal prints exactly one key")
		Expect(revealed.ID).To(Equal(jsonpath(ns, "accesskey/dana-key", ".status.keyID")))
		Expect(keyformat.SecretMatches(revealed.Secret, jsonpath(ns, "accesskey/dana-key", ".status.secretHash"))).To(BeTrue())

		line := refused("", "reveal", "dana-key", "-n", ns, "--as", "erin")
		Expect(line).To(HavePrefix("error: you may not read the Secret " + ns + "/dana-key of accesskey " + ns + "/dana-key: Keyward lets only the key's owner (dana) read it"))
		Expect(line).To(ContainSubstring("anyone else needs get on secrets in namespace " + ns))
		Expect(line).To(ContainSubstring(`User "erin" cannot get resource "secrets"`))
		noSecretIn(revealed, line)
	})

	It("revoke: refused for a developer with the admission policy's message, done by the tenant admin", func() {
		line := refused("", "revoke", "dana-key", "--yes", "-n", ns, "--as", "dana")
		Expect(line).To(Equal("error: revoking an AccessKey (spec.revoked: true) needs the revoke verb on accesskeys, granted by the ClusterRole keyward-tenant-admin; user dana does not have it in namespace " +
			ns + " (refused by the admission policy keyward-accesskey-rights)"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".spec.revoked")).NotTo(Equal("true"))

		Expect(refused("", "revoke", "dana-key", "-n", ns, "--as", "tess")).
			To(ContainSubstring("cannot be undone: confirm with --yes (standard input is not a terminal"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.phase")).To(Equal("Active"))

		Expect(ok("revoke", "dana-key", "--yes", "-n", ns, "--as", "tess")).
			To(HavePrefix("accesskey " + ns + "/dana-key revoked: key ID"))
		Expect(jsonpath(ns, "accesskey/dana-key", ".status.phase")).To(Equal("Revoked"))
		kubectl("wait", "-n", ns, "--for=delete", "secret/dana-key", "--timeout=60s")

		Expect(refused("", "rotate", "dana-key", "-n", ns, "--as", "tess")).To(ContainSubstring("is revoked and its key material destroyed"))
		Expect(refused("", "reveal", "dana-key", "-n", ns, "--as", "tess")).To(ContainSubstring("is revoked and its key material destroyed"))
	})

	It("refuses to rotate a key that is not issued yet", func() {
		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: orphan}
spec: {application: no-such-app}
`, "create", "-n", ns, "-f", "-", "--as=dana")
		Expect(err).NotTo(HaveOccurred(), stderr)
		eventuallyJSONPath(ns, "accesskey/orphan", ".status.phase").Should(Equal("Pending"))
		Expect(refused("", "rotate", "orphan", "-n", ns, "--as", "dana")).
			To(Equal("error: accesskey " + ns + "/orphan has no key issued yet (phase Pending, reason ApplicationNotFound): there is nothing to rotate yet"))
	})

	It("expiring lists exactly the keys whose expiry falls within the window, soonest first", func() {
		at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
		exp := newNamespace()
		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true, maxKeysPerOwner: 20}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: billing}
spec: {maxAccessKeys: 20}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: in-two-days}
spec: {application: billing, expiresAt: "`+at(48*time.Hour)+`"}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: in-two-hours}
spec: {application: billing, expiresAt: "`+at(2*time.Hour)+`"}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: in-ten-days}
spec: {application: billing, expiresAt: "`+at(240*time.Hour)+`"}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: never}
spec: {application: billing}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: revoked-soon}
spec: {application: billing, expiresAt: "`+at(time.Hour)+`", revoked: true}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: expired}
spec: {application: billing, expiresAt: "2026-01-01T00:00:00Z"}
`, "apply", "-n", exp, "-f", "-")
		Expect(err).NotTo(HaveOccurred(), stderr)
		kubectl("wait", "-n", exp, "--for=jsonpath={.status.phase}=Active", "accesskey/in-two-days", "accesskey/in-two-hours",
			"accesskey/in-ten-days", "accesskey/never", "--timeout=60s")
		kubectl("wait", "-n", exp, "--for=jsonpath={.status.phase}=Revoked", "accesskey/revoked-soon", "--timeout=60s")
		kubectl("wait", "-n", exp, "--for=jsonpath={.status.phase}=Expired", "accesskey/expired", "--timeout=60s")

		var list struct {
			Kind  string
			Items []struct{ Metadata struct{ Name string } }
		}
		Expect(json.Unmarshal([]byte(ok("expiring", "--within", "72h", "-n", exp, "-o", "json")), &list)).To(Succeed())
		Expect(list.Kind).To(Equal("AccessKeyList"))
		var names []string
		for _, k := range list.Items {
			names = append(names, k.Metadata.Name)
		}
		Expect(names).To(Equal([]string{"in-two-hours", "in-two-days"}))
		Expect(ok("expiring", "--within", "3d", "-n", exp, "-o", "jsonpath={.items[*].metadata.name}")).To(Equal("in-two-hours in-two-days"))

		table := ok("expiring", "--within", "3d", "-A")
		var rows []string
		for _, l := range strings.Split(table, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == exp {
				rows = append(rows, f[1])
			}
		}
		Expect(rows).To(Equal([]string{"in-two-hours", "in-two-days"}))
		Expect(table).To(MatchRegexp(`NAMESPACE\s+NAME\s+EXPIRES AT\s+EXPIRES IN\s+PHASE\s+APPLICATION\s+OWNER\s+KEY ID`))

		Expect(strings.Fields(ok("expiring", "-n", exp, "-o", "yaml"))).To(ContainElement("in-ten-days"), "the default window is 720h")
		_, errOut, err := plugin("", "expiring", "--within", "1h", "-n", exp)
		Expect(err).NotTo(HaveOccurred())
		Expect(errOut).To(Equal("No AccessKeys expire within 1h in namespace " + exp + ".\n"))
	})

	It("speaks kubectl: -o wide|name|jsonpath|custom-columns, --no-headers, -l, version, one duration syntax", func() {
		kw := newNamespace()
		_, stderr, err := kubectlIn(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true, maxKeysPerOwner: 20}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: reports}
spec: {maxAccessKeys: 20}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: analytics-1, labels: {team: analytics}}
spec: {application: reports, description: nightly export}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: analytics-2, labels: {team: analytics}}
spec: {application: reports}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: web, labels: {team: web}}
spec: {application: reports}
`, "apply", "-n", kw, "-f", "-")
		Expect(err).NotTo(HaveOccurred(), stderr)
		kubectl("wait", "-n", kw, "--for=jsonpath={.status.phase}=Active", "accesskey/analytics-1", "accesskey/analytics-2", "accesskey/web", "--timeout=60s")

		Expect(ok("status", "-n", kw, "-o", "name")).To(Equal("accesskey.keyward.dev/analytics-1\naccesskey.keyward.dev/analytics-2\naccesskey.keyward.dev/web\n"))
		Expect(ok("status", "-n", kw, "-l", "team=analytics", "-o", "name")).To(Equal("accesskey.keyward.dev/analytics-1\naccesskey.keyward.dev/analytics-2\n"))
		Expect(ok("status", "web", "-n", kw, "-o", "jsonpath={.status.keyID}")).To(Equal(jsonpath(kw, "accesskey/web", ".status.keyID")))
		Expect(ok("status", "-n", kw, "-l", "team=web", "-o", "custom-columns=NAME:.metadata.name,KEY:.status.keyID", "--no-headers")).
			To(MatchRegexp(`^web\s+` + jsonpath(kw, "accesskey/web", ".status.keyID") + `\n$`))
		wide := ok("status", "-n", kw, "-o", "wide")
		Expect(wide).To(MatchRegexp(`NAME\s+PHASE\s+.*SECRET\s+ISSUED AT\s+EXPIRES AT\s+DESCRIPTION\s+MESSAGE\n`))
		Expect(wide).To(MatchRegexp(`analytics-1\s+Active\s+.*nightly export\s+the key is issued and verifies\n`))
		Expect(ok("status", "-n", kw, "--no-headers")).NotTo(ContainSubstring("PHASE"))
		Expect(ok("expiring", "-A", "--within", "1d", "-l", "team=analytics", "-o", "name")).To(BeEmpty(), "keys that never expire are not expiring")

		By("version: the plugin's own, and the manager's from the image tag of config/default's Deployment")
		Expect(ok("version", "--client")).To(MatchRegexp(`^Client Version: \S+ \(revision \S+, go\S+, \S+/\S+\)\n$`))
		image := jsonpath("keyward-system", "deployment/keyward-controller-manager", `.spec.template.spec.containers[?(@.name=="manager")].image`)
		tag := image[strings.LastIndex(image, ":")+1:]
		Expect(ok("version")).To(ContainSubstring("\nManager Version: " + tag + " (image " + image + ", Deployment keyward-system/keyward-controller-manager)\n"))
		Expect(ok("version", "--as", "tess")).To(ContainSubstring("\nManager Version: unknown (you may not list deployments in all namespaces)\n"))

		By("one duration syntax: --timeout takes days as --within and --by do")
		Expect(ok("deactivate", "web", "-n", kw, "--timeout", "1d")).To(ContainSubstring("phase Inactive"))
		Expect(ok("activate", "web", "-n", kw, "--timeout", "1h30m")).To(ContainSubstring("phase Active"))

		By("bulk revoke by label, as the analytics team's keys after a leak: refused without --yes, naming every key; then all at once")
		kubectl("create", "rolebinding", "tess", "-n", kw, "--clusterrole=keyward-tenant-admin", "--user=tess")
		Eventually(func() string {
			out, _, _ := kubectlResult("auth", "can-i", "revoke", "accesskeys", "-n", kw, "--as=tess")
			return strings.TrimSpace(out)
		}, timeout, interval).Should(Equal("yes"))
		Expect(refused("", "revoke", "-l", "team=analytics", "-n", kw, "--as", "tess")).To(Equal("error: revoking 2 accesskeys (" +
			kw + "/analytics-1, " + kw + "/analytics-2) cannot be undone: confirm with --yes (standard input is not a terminal, so there is no one to ask)"))
		Expect(jsonpath(kw, "accesskey/analytics-1", ".spec.revoked")).To(Equal("false"))
		out := ok("revoke", "-l", "team=analytics", "-n", kw, "--as", "tess", "--yes", "--timeout", "2m")
		Expect(out).To(ContainSubstring("accesskey " + kw + "/analytics-1 revoked: key ID"))
		Expect(out).To(ContainSubstring("accesskey " + kw + "/analytics-2 revoked: key ID"))
		Expect(jsonpath(kw, "accesskey/analytics-1", ".status.phase")).To(Equal("Revoked"))
		Expect(jsonpath(kw, "accesskey/analytics-2", ".status.phase")).To(Equal("Revoked"))
		Expect(jsonpath(kw, "accesskey/web", ".status.phase")).To(Equal("Active"), "the selector left the other team's key alone")

		By("several names at once: a name that does not exist fails before anything changes")
		Expect(refused("", "deactivate", "web", "nope", "-n", kw)).To(Equal(`error: accesskey "nope" not found in namespace "` + kw + `"`))
		Expect(jsonpath(kw, "accesskey/web", ".status.phase")).To(Equal("Active"))
	})

	It("completes key names through kubectl's plugin completion (kubectl_complete-keyward)", func() {
		cmd := exec.Command(kubectlBin, "__complete", "keyward", "rotate", "-n", ns, "--kubeconfig="+kubeconfig, "")
		cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.Output()
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Fields(string(out))).To(ContainElements("dana-key", "orphan"))
	})
})
