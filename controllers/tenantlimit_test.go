package controllers_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

var _ = Describe("The tenant-wide maxKeys limit, across Applications", func() {
	It("rejects a third key with TenantLimitExceeded under maxKeys 2 until one of the two is deleted, then issues it", func() {
		ns := newTenant(func(t *keyward.TenantSettings) { t.Spec.MaxKeys = 2 })
		newApp(ns, "a", withMaxKeys(10))
		newApp(ns, "b", withMaxKeys(10))
		// Different owners and Applications: only the tenant's limit binds.
		k1 := newKey(ns, "one", "a", ownedBy("ann"))
		eventuallyPhase(k1, keyward.PhaseActive)
		k2 := newKey(ns, "two", "b", ownedBy("ben"))
		eventuallyPhase(k2, keyward.PhaseActive)

		k3 := newKey(ns, "three", "a", ownedBy("cat"))
		r := eventuallyPhase(k3, keyward.PhaseRejected, keyward.ReasonTenantLimitExceeded)
		Expect(r.Status.KeyID).To(BeEmpty())
		Expect(hasSecret(k3)).To(BeFalse())
		Eventually(eventReasons(k3), timeout, interval).Should(ContainElement(keyward.EventLimitExceeded))

		// An inactive key keeps its slot.
		update(k2, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
		eventuallyPhase(k2, keyward.PhaseInactive)
		consistentlyPhase(k3, keyward.PhaseRejected, time.Second)

		Expect(k8s.Delete(ctx, k1)).To(Succeed())
		eventuallyPhase(k3, keyward.PhaseActive)
		Expect(hasSecret(k3)).To(BeTrue())

		// Raising the limit lets a fourth in; lowering it keeps issued keys.
		k4 := newKey(ns, "four", "b", ownedBy("dan"))
		eventuallyPhase(k4, keyward.PhaseRejected, keyward.ReasonTenantLimitExceeded)
		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}, func(t *keyward.TenantSettings) {
			t.Spec.MaxKeys = 3
		})
		eventuallyPhase(k4, keyward.PhaseActive)
		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}, func(t *keyward.TenantSettings) {
			t.Spec.MaxKeys = 1
		})
		consistentlyPhase(k4, keyward.PhaseActive, time.Second)
		eventuallyPhase(k3, keyward.PhaseActive)
	})
})
