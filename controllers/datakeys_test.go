package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/secrets"
)

// entryNames lists the data keys of the key's Secret (never their values).
func entryNames(key *keyward.AccessKey) []string {
	GinkgoHelper()
	s := secretOf(key)
	Expect(s).NotTo(BeNil())
	var names []string
	for n := range s.Data {
		names = append(names, n)
	}
	return names
}

var _ = Describe("Secrets shaped for the workloads that mount them (spec.secretTemplate.dataKeys)", func() {
	It("names the entries as asked, renames them on change without a new key, and carries the key ID", func() {
		ns := newTenant()
		newApp(ns, "app")
		key := newKey(ns, "env", "app", func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate = &keyward.SecretTemplate{DataKeys: &keyward.SecretDataKeys{AccessKey: "API_KEY"}}
		})
		issued := eventuallyPhase(key, keyward.PhaseActive)
		Expect(entryNames(key)).To(ConsistOf("API_KEY", "keyId", "application"))
		Expect(secretOf(key).Annotations).To(HaveKeyWithValue(secrets.AnnotationKeyID, issued.Status.KeyID))
		before := fingerprint(materialOf(key))

		update(key, func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate.DataKeys = &keyward.SecretDataKeys{AccessKey: "TOKEN", KeyID: "KEY_ID", Application: "APP"}
		})
		Eventually(func() []string { return entryNames(key) }, timeout, interval).Should(ConsistOf("TOKEN", "KEY_ID", "APP"))
		Expect(fingerprint(materialOf(key))).To(Equal(before), "renaming entries keeps the key")
		Expect(get(key).Status.KeyID).To(Equal(issued.Status.KeyID))
		Expect(eventReasons(key)()).NotTo(ContainElement(keyward.EventSecretRecreated))

		update(key, func(k *keyward.AccessKey) { k.Spec.SecretTemplate.DataKeys = nil })
		Eventually(func() []string { return entryNames(key) }, timeout, interval).Should(ConsistOf("accessKey", "keyId", "application"))
		Expect(fingerprint(materialOf(key))).To(Equal(before))

		By("rotating: the annotation follows the new key ID")
		update(key, func(k *keyward.AccessKey) {
			if k.Annotations == nil {
				k.Annotations = map[string]string{}
			}
			k.Annotations[keyward.RotateAnnotation] = "now"
		})
		Eventually(func() string { return get(key).Status.KeyID }, timeout, interval).ShouldNot(Equal(issued.Status.KeyID))
		Eventually(func() string { return secretOf(key).Annotations[secrets.AnnotationKeyID] }, timeout, interval).Should(Equal(get(key).Status.KeyID))
	})

	It("refuses entry names that collide or are not valid Secret keys", func() {
		ns := newTenant()
		for _, dk := range []keyward.SecretDataKeys{{AccessKey: "keyId"}, {KeyID: "X", Application: "X"}, {AccessKey: "bad name"}, {AccessKey: ".."}} {
			key := buildKey(ns, "bad", "app", func(k *keyward.AccessKey) {
				k.Spec.SecretTemplate = &keyward.SecretTemplate{DataKeys: &dk}
			})
			err := k8s.Create(ctx, key)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%+v: %v", dk, err)
			Expect(err.Error()).To(ContainSubstring("spec.secretTemplate.dataKeys"))
		}
	})
})
