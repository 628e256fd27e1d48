package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/test/harness/argocd"
)

// object reads one object (kind/name, e.g. accesskey/api) from the API
// server, as a GitOps tool's client sees it.
func object(ns, kindName string) *unstructured.Unstructured {
	GinkgoHelper()
	kind, name, _ := strings.Cut(kindName, "/")
	kinds := map[string]string{"accesskey": "AccessKey", "application": "Application", "tenantsettings": "TenantSettings"}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(keyward.GroupVersion.WithKind(kinds[kind]))
	Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)).To(Succeed())
	return u
}

// kstatusOf computes the object's status with cli-utils' kstatus, the
// library Flux, kpt and cli-utils' apply/wait use.
func kstatusOf(u *unstructured.Unstructured) *status.Result {
	GinkgoHelper()
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return res
}

// The table of manifests the API server refuses is test/e2e/testdata/invalid:
// each file says what it is and, on a "# refused:" line, what the refusal
// says. docs/kinds.md lists the table.
var _ = Describe("Invalid manifests applied with kubectl", func() {
	It("are each refused by the API server with the message that says why", func() {
		ns := newNamespace()
		files, err := filepath.Glob(filepath.Join(root, "test", "e2e", "testdata", "invalid", "*.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(len(files)).To(BeNumerically(">=", 10))
		for _, f := range files {
			data, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			var want string
			for _, line := range strings.Split(string(data), "\n") {
				if r, ok := strings.CutPrefix(line, "# refused: "); ok {
					want = r
				}
			}
			Expect(want).NotTo(BeEmpty(), "%s has no # refused: line", f)
			for _, mode := range [][]string{{"apply"}, {"apply", "--server-side"}} {
				out, errOut, err := kubectlResult(append(mode, "-n", ns, "-f", f)...)
				Expect(err).To(HaveOccurred(), "kubectl %s -f %s was accepted:\n%s", strings.Join(mode, " "), filepath.Base(f), out)
				Expect(errOut).To(ContainSubstring(want), "kubectl %s -f %s", strings.Join(mode, " "), filepath.Base(f))
			}
		}
		Expect(kubectl("get", "keyward", "-n", ns, "-o", "name")).To(BeEmpty())
	})
})

// gitopsSamples writes config/samples with the labels and annotations Argo
// CD and Flux put on what they apply, and returns the file.
func gitopsSamples() string {
	GinkgoHelper()
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	sort.Strings(files)
	var docs []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			labels := u.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			labels["app.kubernetes.io/instance"] = "shop-keys"
			labels["kustomize.toolkit.fluxcd.io/name"] = "shop"
			labels["kustomize.toolkit.fluxcd.io/namespace"] = "flux-system"
			u.SetLabels(labels)
			ann := u.GetAnnotations()
			if ann == nil {
				ann = map[string]string{}
			}
			ann["argocd.argoproj.io/tracking-id"] = "shop-keys:keyward.dev/" + u.GetKind() + ":" + u.GetName()
			ann["argocd.argoproj.io/sync-wave"] = "1"
			u.SetAnnotations(ann)
			out, err := yaml.Marshal(u.Object)
			Expect(err).NotTo(HaveOccurred())
			docs = append(docs, string(out))
		}
	}
	path := filepath.Join(GinkgoT().TempDir(), "samples.yaml")
	Expect(os.WriteFile(path, []byte(strings.Join(docs, "---\n")), 0o600)).To(Succeed())
	return path
}

var _ = Describe("GitOps tools apply config/samples again and again", func() {
	It("finds no diff, rotates and re-issues nothing, and the Secrets carry none of their tracking metadata", func() {
		ns := newNamespace()
		samples := gitopsSamples()
		kubectl("apply", "--server-side", "-n", ns, "-f", samples)
		kubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Active", "accesskey", "--all", "--timeout=60s")

		keys := func() string {
			return kubectl("get", "accesskeys", "-n", ns, "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.status.keyID} {.status.issuedAt} {.status.lastRotatedAt} {.status.secretHash}{"\n"}{end}`)
		}
		before := keys()
		Expect(strings.Count(before, "\n")).To(Equal(3))

		By("server-side apply again, then kubectl diff --server-side: no diff")
		kubectl("apply", "--server-side", "-n", ns, "-f", samples)
		out, errOut, err := kubectlResult("diff", "--server-side", "-n", ns, "-f", samples)
		Expect(err).NotTo(HaveOccurred(), "kubectl diff --server-side found a difference:\n%s\n%s", out, errOut)

		By("client-side apply (as Argo CD does by default), then kubectl diff: no diff")
		kubectl("apply", "-n", ns, "-f", samples)
		kubectl("apply", "-n", ns, "-f", samples)
		out, errOut, err = kubectlResult("diff", "-n", ns, "-f", samples)
		Expect(err).NotTo(HaveOccurred(), "kubectl diff found a difference:\n%s\n%s", out, errOut)

		By("no key rotated or re-issued: same key IDs, hashes and times, one Issued Event per key, no Rotated")
		Consistently(keys, 3*time.Second, interval).Should(Equal(before))
		reasons := kubectl("get", "events", "-n", ns, "--field-selector=involvedObject.kind=AccessKey", "-o", "jsonpath={.items[*].reason}")
		Expect(strings.Count(reasons, keyward.EventIssued)).To(Equal(3), reasons)
		Expect(reasons).NotTo(ContainSubstring(keyward.EventRotated))
		Expect(reasons).NotTo(ContainSubstring(keyward.EventSecretRecreated))

		By("the generated Secrets carry no tracking label or annotation of Argo CD or Flux")
		var secrets struct {
			Items []struct {
				Metadata struct {
					Name        string
					Labels      map[string]string
					Annotations map[string]string
				}
			}
		}
		Expect(json.Unmarshal([]byte(kubectl("get", "secrets", "-n", ns, "-l", "app.kubernetes.io/managed-by=keyward", "-o", "json")), &secrets)).To(Succeed())
		Expect(secrets.Items).To(HaveLen(3))
		for _, s := range secrets.Items {
			for k := range s.Metadata.Labels {
				Expect(k).NotTo(Or(Equal("app.kubernetes.io/instance"), HavePrefix("kustomize.toolkit.fluxcd.io/"), HavePrefix("argocd.argoproj.io/")),
					"Secret %s label %s", s.Metadata.Name, k)
			}
			for k := range s.Metadata.Annotations {
				Expect(k).NotTo(Or(HavePrefix("argocd.argoproj.io/"), HavePrefix("kustomize.toolkit.fluxcd.io/"), Equal("kubectl.kubernetes.io/last-applied-configuration")),
					"Secret %s annotation %s", s.Metadata.Name, k)
			}
		}
	})
})

var _ = Describe("Flux, kubectl wait and Argo CD read every phase of a key", func() {
	It("kstatus and the Argo CD health checks say what each phase means; the rotate action rotates once", func() {
		ns := newNamespace()
		apply := func(manifest string) {
			GinkgoHelper()
			out, errOut, err := kubectlIn(manifest, "apply", "-n", ns, "-f", "-")
			Expect(err).NotTo(HaveOccurred(), "%s\n%s", out, errOut)
		}
		apply(`
apiVersion: keyward.dev/v1alpha1
kind: TenantSettings
metadata: {name: default}
spec: {apiKeysEnabled: true}
---
apiVersion: keyward.dev/v1alpha1
kind: Application
metadata: {name: shop}
spec:
  maxAccessKeys: 10
  scopes: [{name: orders, access: ReadOnly}]
`)
		By("kubectl wait --for=condition=Ready returns once a new key is issued")
		apply(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: active}
spec: {application: shop}
`)
		kubectl("wait", "-n", ns, "--for=condition=Ready", "accesskey/active", "--timeout=60s")
		Expect(jsonpath(ns, "accesskey/active", ".status.phase")).To(Equal(string(keyward.PhaseActive)))
		Expect(jsonpath(ns, "accesskey/active", ".status.keyID")).NotTo(BeEmpty())

		apply(`
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: pending}
spec: {application: missing}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: rejected}
spec:
  application: shop
  scopes: [{name: admin, access: ReadWrite}]
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: inactive}
spec: {application: shop, state: Inactive}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: expired}
spec: {application: shop, expiresAt: "2001-01-01T00:00:00Z"}
---
apiVersion: keyward.dev/v1alpha1
kind: AccessKey
metadata: {name: revoked}
spec: {application: shop}
`)
		kubectl("wait", "-n", ns, "--for=condition=Ready", "accesskey/revoked", "--timeout=60s")
		kubectl("patch", "-n", ns, "accesskey/revoked", "--type=merge", "-p", `{"spec":{"revoked":true}}`)

		want := map[string]struct {
			phase  keyward.KeyPhase
			kstat  status.Status
			health string
		}{
			"active":   {keyward.PhaseActive, status.CurrentStatus, "Healthy"},
			"pending":  {keyward.PhasePending, status.InProgressStatus, "Progressing"},
			"rejected": {keyward.PhaseRejected, status.FailedStatus, "Degraded"},
			"inactive": {keyward.PhaseInactive, status.CurrentStatus, "Suspended"},
			"expired":  {keyward.PhaseExpired, status.CurrentStatus, "Healthy"},
			"revoked":  {keyward.PhaseRevoked, status.CurrentStatus, "Healthy"},
		}
		for name, w := range want {
			By(name + ": " + string(w.phase) + ", kstatus " + w.kstat.String() + ", Argo CD " + w.health)
			eventuallyJSONPath(ns, "accesskey/"+name, ".status.phase").Should(Equal(string(w.phase)))
			Eventually(func() status.Status {
				return kstatusOf(object(ns, "accesskey/"+name)).Status
			}, timeout, interval).Should(Equal(w.kstat), name)
			u := object(ns, "accesskey/"+name)
			res := kstatusOf(u)
			reason := jsonpath(ns, "accesskey/"+name, `.status.conditions[?(@.type=="Ready")].reason`)
			if w.kstat == status.FailedStatus {
				Expect(res.Message).NotTo(BeEmpty())
				Expect(jsonpath(ns, "accesskey/"+name, `.status.conditions[?(@.type=="Stalled")].reason`)).To(Equal(keyward.ReasonScopeNotAllowed))
			}
			hs, err := argocd.Health(root, "AccessKey", u.Object)
			Expect(err).NotTo(HaveOccurred())
			Expect(hs.Status).To(Equal(w.health), name)
			Expect(hs.Message).To(HavePrefix(reason + ": "))
		}

		By("TenantSettings and Application: Current and Healthy when keys are on")
		for _, obj := range []struct{ kind, name string }{{"TenantSettings", "tenantsettings/default"}, {"Application", "application/shop"}} {
			Eventually(func() status.Status { return kstatusOf(object(ns, obj.name)).Status }, timeout, interval).Should(Equal(status.CurrentStatus))
			hs, err := argocd.Health(root, obj.kind, object(ns, obj.name).Object)
			Expect(err).NotTo(HaveOccurred())
			Expect(hs.Status).To(Equal("Healthy"), obj.name)
		}

		By("switched off: the TenantSettings is Current (what the user set) and Suspended; its Application waits and is Suspended")
		kubectl("patch", "-n", ns, "tenantsettings/default", "--type=merge", "-p", `{"spec":{"apiKeysEnabled":false}}`)
		Eventually(func() string {
			hs, _ := argocd.Health(root, "TenantSettings", object(ns, "tenantsettings/default").Object)
			return hs.Status
		}, timeout, interval).Should(Equal("Suspended"))
		Expect(kstatusOf(object(ns, "tenantsettings/default")).Status).To(Equal(status.CurrentStatus))
		Eventually(func() string {
			hs, _ := argocd.Health(root, "Application", object(ns, "application/shop").Object)
			return hs.Status
		}, timeout, interval).Should(Equal("Suspended"))
		Expect(kstatusOf(object(ns, "application/shop")).Status).To(Equal(status.InProgressStatus))
		kubectl("patch", "-n", ns, "tenantsettings/default", "--type=merge", "-p", `{"spec":{"apiKeysEnabled":true}}`)
		Eventually(func() status.Status { return kstatusOf(object(ns, "application/shop")).Status }, timeout, interval).Should(Equal(status.CurrentStatus))

		By("Argo CD offers rotate on the Active key, not on the Pending, Rejected or Revoked ones")
		for name, enabled := range map[string]bool{"active": true, "inactive": true, "pending": false, "rejected": false, "revoked": false} {
			actions, err := argocd.Discover(root, "AccessKey", object(ns, "accesskey/"+name).Object)
			Expect(err).NotTo(HaveOccurred())
			Expect(actions).To(ContainElement(argocd.ActionDiscovery{Name: "rotate", Disabled: !enabled}), name)
		}

		By("the rotate action's output, patched onto the live key as Argo CD does, rotates it exactly once")
		oldID := jsonpath(ns, "accesskey/active", ".status.keyID")
		live := object(ns, "accesskey/active")
		rotated, err := argocd.Action(root, "AccessKey", "rotate", live.Object)
		Expect(err).NotTo(HaveOccurred())
		liveJSON, err := json.Marshal(live.Object)
		Expect(err).NotTo(HaveOccurred())
		rotatedJSON, err := json.Marshal(rotated)
		Expect(err).NotTo(HaveOccurred())
		patch, err := jsonpatch.CreateMergePatch(liveJSON, rotatedJSON)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(patch)).To(MatchRegexp(`^\{"metadata":\{"annotations":\{"keyward.dev/rotate":"[0-9T:Z-]+"\}\}\}$`))
		kubectl("patch", "-n", ns, "accesskey/active", "--type=merge", "-p", string(patch))
		request := jsonpath(ns, "accesskey/active", `.metadata.annotations.keyward\.dev/rotate`)
		eventuallyJSONPath(ns, "accesskey/active", ".status.rotation.lastRequest").Should(Equal(request))
		newID := jsonpath(ns, "accesskey/active", ".status.keyID")
		Expect(newID).NotTo(Equal(oldID))
		kubectl("wait", "-n", ns, "--for=condition=Ready", "accesskey/active", "--timeout=60s")
		By("applying the same output again changes nothing")
		kubectl("patch", "-n", ns, "accesskey/active", "--type=merge", "-p", string(patch))
		Consistently(func() string { return jsonpath(ns, "accesskey/active", ".status.keyID") }, 2*time.Second, interval).Should(Equal(newID))
		Expect(strings.Count(kubectl("get", "events", "-n", ns, "--field-selector=involvedObject.name=active", "-o", "jsonpath={.items[*].reason}"),
			keyward.EventRotated)).To(Equal(1))
	})
})
