package controllers_test

import (
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// A finalizer someone else owns (a backup or GitOps tool) can keep a
// deleted AccessKey for as long as it likes.
const holdFinalizer = "example.com/hold"

func heldByFinalizer(k *keyward.AccessKey) { k.Finalizers = append(k.Finalizers, holdFinalizer) }

// releaseKey removes holdFinalizer from key, so that the API server
// removes the object.
func releaseKey(key *keyward.AccessKey) {
	GinkgoHelper()
	update(key, func(k *keyward.AccessKey) { controllerutil.RemoveFinalizer(k, holdFinalizer) })
}

var _ = Describe("A key being deleted holds its slot and shows until it is gone", func() {
	It("keeps a second key Rejected while the first is terminating, counts both, and issues the second once the first is gone", func() {
		ns := newTenant()
		dropWhenDone(ns)
		newApp(ns, "one", withMaxKeys(1))
		appCounts := func() *keyward.KeyCounts {
			return get(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "one"}}).Status.Keys
		}
		tenantCounts := func() *keyward.KeyCounts {
			return get(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}).Status.Keys
		}

		const backup = "backup.example.com/keep"
		first := newKey(ns, "first", "one", heldByFinalizer, func(k *keyward.AccessKey) { k.Finalizers = append(k.Finalizers, backup) })
		eventuallyPhase(first, keyward.PhaseActive)
		Expect(k8s.Delete(ctx, first)).To(Succeed())

		// Its own status says it is being deleted, and by whom it is held
		// (the API server takes status writes on a terminating object),
		// and follows the finalizers as they go.
		deleting := func(want ...string) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				got := get(first.DeepCopy())
				g.Expect(got.DeletionTimestamp).NotTo(BeNil())
				g.Expect(readyReason(got)).To(Equal(keyward.ReasonDeleting))
				g.Expect(readyCondition(got).Status).To(Equal(metav1.ConditionFalse))
				for _, f := range []string{holdFinalizer, backup} {
					if slices.Contains(want, f) {
						g.Expect(readyMessage(got)).To(ContainSubstring(f))
					} else {
						g.Expect(readyMessage(got)).NotTo(ContainSubstring(f))
					}
				}
				g.Expect(got.Status.Phase).To(Equal(keyward.PhaseActive), "the phase last recorded")
				g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			}, timeout, interval).Should(Succeed())
		}
		deleting(holdFinalizer, backup)
		update(first, func(k *keyward.AccessKey) { controllerutil.RemoveFinalizer(k, backup) })
		deleting(holdFinalizer)

		// Create again, twice: no key takes the terminating key's slot.
		second := newKey(ns, "second", "one", heldByFinalizer)
		eventuallyPhase(second, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded)
		third := newKey(ns, "third", "one")
		eventuallyPhase(third, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded)
		consistentlyPhase(second, keyward.PhaseRejected, 2*time.Second)
		Expect(hasSecret(second)).To(BeFalse())

		// A key being deleted that never held a slot takes none: deleting
		// the Rejected second (still held by its finalizer) leaves third
		// Rejected.
		Expect(k8s.Delete(ctx, second)).To(Succeed())
		Eventually(func() string { return readyReason(get(second.DeepCopy())) }, timeout, interval).Should(Equal(keyward.ReasonDeleting))
		consistentlyPhase(third, keyward.PhaseRejected, time.Second)

		// The counts include the terminating keys, by their recorded phase.
		want := &keyward.KeyCounts{Total: 3, Active: 1, Rejected: 2}
		Eventually(appCounts, timeout, interval).Should(Equal(want))
		Eventually(tenantCounts, timeout, interval).Should(Equal(want))

		// Once the first is gone, the waiting key wakes and takes its slot.
		releaseKey(first)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(first), &keyward.AccessKey{}))
		}, timeout, interval).Should(BeTrue())
		eventuallyPhase(third, keyward.PhaseActive)
		Expect(get(second.DeepCopy()).Status.Phase).To(Equal(keyward.PhaseRejected), "a key being deleted is never issued")
		Eventually(appCounts, timeout, interval).Should(Equal(&keyward.KeyCounts{Total: 2, Active: 1, Rejected: 1}))

		releaseKey(second)
		Eventually(appCounts, timeout, interval).Should(Equal(&keyward.KeyCounts{Total: 1, Active: 1}))
	})
})
