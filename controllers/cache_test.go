package controllers_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// digestForm is what a cached data value may look like: a key's digest
// (its public ID and the hash status records) or the SHA-256 of a value.
var digestForm = regexp.MustCompile(`^(kw_[a-z2-7]{16}_)?sha256:[0-9a-f]{64}$`)

var _ = Describe("The manager's cache", Serial, func() {
	It("holds no value of any Keyward Secret, only digests, after keys are issued, rotated and re-issued", func() {
		ns := newTenant()
		newApp(ns, "app", withMaxKeys(3))
		issued := newKey(ns, "issued", "app")
		rotated := newKey(ns, "rotated", "app")
		reissued := newKey(ns, "reissued", "app", func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate = &keyward.SecretTemplate{DataKeys: &keyward.SecretDataKeys{AccessKey: "TOKEN"}}
		})
		before := map[string]string{}
		for _, k := range []*keyward.AccessKey{issued, rotated, reissued} {
			before[k.Name] = eventuallyPhase(k, keyward.PhaseActive).Status.KeyID
			materialOf(k)
		}

		By("rotating one key and re-issuing another")
		update(rotated, func(k *keyward.AccessKey) {
			k.Annotations = map[string]string{keyward.RotateAnnotation: "now"}
		})
		Expect(k8s.Delete(ctx, secretOf(reissued))).To(Succeed())
		for _, k := range []*keyward.AccessKey{rotated, reissued} {
			Eventually(func() string { return get(k.DeepCopy()).Status.KeyID }, timeout, interval).ShouldNot(Equal(before[k.Name]))
			eventuallyPhase(k, keyward.PhaseActive)
			materialOf(k)
		}
		Expect(eventReasons(reissued)()).To(ContainElement(keyward.EventSecretRecreated))

		By("reading every Keyward Secret from the manager's own cache")
		seenKeys.Lock()
		material := make([]string, 0, len(seenKeys.keys))
		for m := range seenKeys.keys {
			material = append(material, m)
		}
		seenKeys.Unlock()
		expectOnlyDigests(ns, material)

		By("after a restart, the new manager's cache holds only digests too (its first list, not watch events)")
		stopMgr()
		mgr, stopMgr = startManager()
		expectOnlyDigests(ns, material)

		By("the digests are enough: the keys stay as they are, nothing is re-issued")
		ids := map[string]string{}
		for _, k := range []*keyward.AccessKey{issued, rotated, reissued} {
			got := get(k.DeepCopy())
			ids[k.Name] = got.Status.KeyID
			m := materialOf(k)
			Expect(m.ID).To(Equal(got.Status.KeyID))
			Expect(keyformat.HashSecret(m.Secret)).To(Equal(got.Status.SecretHash))
		}
		Expect(ids[issued.Name]).To(Equal(before[issued.Name]))
		Consistently(func(g Gomega) {
			for _, k := range []*keyward.AccessKey{issued, rotated, reissued} {
				got := get(k.DeepCopy())
				g.Expect(got.Status.KeyID).To(Equal(ids[k.Name]))
				g.Expect(got.Status.Phase).To(Equal(keyward.PhaseActive))
			}
		}, 2*time.Second, interval).Should(Succeed())
		Expect(eventReasons(issued)()).NotTo(ContainElement(keyward.EventSecretRecreated))
		Expect(eventReasons(rotated)()).NotTo(ContainElement(keyward.EventSecretRecreated))
	})
})

// expectOnlyDigests reads every Keyward Secret from the manager's own
// cache until each data value is the digest of what the API server holds,
// none holds any of material, and ns's three Secrets are there.
func expectOnlyDigests(ns string, material []string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var cached corev1.SecretList
		g.Expect(mgr.GetCache().List(ctx, &cached)).To(Succeed())
		inNamespace := 0
		for i := range cached.Items {
			s := &cached.Items[i]
			if s.Namespace == ns {
				inNamespace++
			}
			// Cached values are compared with what the API server holds
			// by their digests, so that a failure prints no key.
			var stored corev1.Secret
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), &stored); err == nil && stored.ResourceVersion == s.ResourceVersion {
				g.Expect(len(s.Data)).To(Equal(len(stored.Data)), "Secret %s/%s keeps its entries", s.Namespace, s.Name)
				for n, v := range stored.Data {
					g.Expect(bytes.Equal(s.Data[n], secrets.DigestValue(v))).To(BeTrue(),
						"entry %s of Secret %s/%s is the digest of the stored value", n, s.Namespace, s.Name)
				}
			}
			for n, v := range s.Data {
				g.Expect(digestForm.MatchString(string(v))).To(BeTrue(), "entry %s of Secret %s/%s holds no digest", n, s.Namespace, s.Name)
			}
			raw, err := json.Marshal(s)
			g.Expect(err).NotTo(HaveOccurred())
			for _, m := range material {
				g.Expect(strings.Contains(string(raw), m)).To(BeFalse(), "Secret %s/%s holds key material in the cache", s.Namespace, s.Name)
			}
		}
		g.Expect(inNamespace).To(Equal(3), "the cache holds the three keys' Secrets")
	}, timeout, interval).Should(Succeed())
}
