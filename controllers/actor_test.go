package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// eventNotes lists the notes of the Events with reason recorded for obj.
func eventNotes(obj client.Object, reason string) func() []string {
	return func() []string {
		var list corev1.EventList
		if err := k8s.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		var notes []string
		for _, e := range list.Items {
			if e.InvolvedObject.Name == obj.GetName() && e.InvolvedObject.Kind == "AccessKey" && e.Reason == reason {
				notes = append(notes, e.Message)
			}
		}
		return notes
	}
}

var stampAnnotations = []string{keyward.RevokedByAnnotation, keyward.StateChangedByAnnotation,
	keyward.ExpiryChangedByAnnotation, keyward.RotationRequestedByAnnotation}

// forge sets every stamp annotation on k to who.
func forge(k *keyward.AccessKey, who string) {
	if k.Annotations == nil {
		k.Annotations = map[string]string{}
	}
	for _, a := range stampAnnotations {
		k.Annotations[a] = who
	}
}

var _ = Describe("Who did it: the API server stamps the user who acts on a key, and the Events name them", func() {
	var ns string
	var dana, tess client.Client

	BeforeEach(func() {
		ns = newTenant()
		newApp(ns, "payments", withMaxKeys(10))
		dana = userWithRole(ns, "dana", "keyward-developer")
		tess = userWithRole(ns, "tess", "keyward-tenant-admin")
	})

	It("records who deactivates, reactivates, extends, rotates and revokes, and overwrites what a client forges", func() {
		key := unowned(ns, "dana-key", "payments")
		forge(key, "tess")
		Expect(dana.Create(ctx, key)).To(Succeed())
		for _, a := range stampAnnotations {
			Expect(get(key).Annotations).NotTo(HaveKey(a), "a stamp forged at create is removed")
		}
		eventuallyPhase(key, keyward.PhaseActive)

		// Deactivated by dana, although she claims it was tess.
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) {
			k.Spec.State = keyward.StateInactive
			forge(k, "tess")
		})).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.StateChangedByAnnotation, "dana"))
		Expect(get(key).Annotations).NotTo(HaveKey(keyward.RevokedByAnnotation))
		eventuallyPhase(key, keyward.PhaseInactive)
		Eventually(eventNotes(key, keyward.EventDeactivated), timeout, interval).Should(ContainElement(HaveSuffix("; by dana")))

		// An edit that does nothing else cannot change or erase a stamp.
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) {
			k.Spec.Description = "rename"
			forge(k, "tess")
		})).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.StateChangedByAnnotation, "dana"))
		Expect(get(key).Annotations).NotTo(HaveKey(keyward.RevokedByAnnotation))
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) { delete(k.Annotations, keyward.StateChangedByAnnotation) })).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.StateChangedByAnnotation, "dana"))

		// Reactivated by tess.
		Expect(updateAs(tess, key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateActive })).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.StateChangedByAnnotation, "tess"))
		eventuallyPhase(key, keyward.PhaseActive)
		Eventually(eventNotes(key, keyward.EventReactivated), timeout, interval).Should(ContainElement(HaveSuffix("; by tess")))

		// Extended by dana.
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) {
			k.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(48 * time.Hour))
		})).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.ExpiryChangedByAnnotation, "dana"))

		// Rotated by dana.
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) {
			k.Annotations[keyward.RotateAnnotation] = "r1"
			k.Annotations[keyward.RotationRequestedByAnnotation] = "tess"
		})).To(Succeed())
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.RotationRequestedByAnnotation, "dana"))
		Eventually(eventNotes(key, keyward.EventRotated), timeout, interval).Should(ContainElement(HaveSuffix("; by dana")))

		// Revoked by tess; dana's later edit keeps that.
		Expect(updateAs(tess, key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })).To(Succeed())
		eventuallyPhase(key, keyward.PhaseRevoked)
		Expect(get(key).Annotations).To(HaveKeyWithValue(keyward.RevokedByAnnotation, "tess"))
		Eventually(eventNotes(key, keyward.EventRevoked), timeout, interval).Should(ContainElement(HaveSuffix("; by tess")))
		Expect(updateAs(dana, key, func(k *keyward.AccessKey) { forge(k, "mallory") })).To(Succeed())
		got := get(key).Annotations
		Expect(got).To(HaveKeyWithValue(keyward.RevokedByAnnotation, "tess"))
		Expect(got).To(HaveKeyWithValue(keyward.StateChangedByAnnotation, "tess"))
		Expect(got).To(HaveKeyWithValue(keyward.ExpiryChangedByAnnotation, "dana"))
		Expect(got).To(HaveKeyWithValue(keyward.RotationRequestedByAnnotation, "dana"))
	})
})
