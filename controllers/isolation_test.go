package controllers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/controllers"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// Issue 14 (tenant isolation): what one tenant can apply must not keep key
// material alive, be adopted into use, or stall other keys.

const foreignFinalizer = "backup.example.com/hold"

// secretGoneOrEmpty reports whether the key's Secret is gone, or is being
// deleted with no data left. It never prints the data.
func secretGoneOrEmpty(key *keyward.AccessKey) func() string {
	return func() string {
		s := secretOf(key)
		switch {
		case s == nil:
			return "gone"
		case !s.DeletionTimestamp.IsZero() && len(s.Data) == 0:
			return "emptied and terminating"
		case !s.DeletionTimestamp.IsZero():
			return fmt.Sprintf("terminating with %d data entries", len(s.Data))
		}
		return fmt.Sprintf("present with %d data entries", len(s.Data))
	}
}

func releaseFinalizer(key *keyward.AccessKey) {
	GinkgoHelper()
	s := secretOf(key)
	if s == nil {
		return
	}
	update(s, func(s *corev1.Secret) { controllerutil.RemoveFinalizer(s, foreignFinalizer) })
	Eventually(func() bool { return hasSecret(key) }, timeout, interval).Should(BeFalse())
}

var _ = Describe("Revocation and deletion, which leave no key material behind", func() {
	It("empties a revoked key's Secret that a foreign finalizer keeps", func() {
		key, _ := issuedKey("held")
		update(secretOf(key), func(s *corev1.Secret) { controllerutil.AddFinalizer(s, foreignFinalizer) })

		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		eventuallyPhase(key, keyward.PhaseRevoked)
		Eventually(secretGoneOrEmpty(key), timeout, interval).Should(Equal("emptied and terminating"))
		releaseFinalizer(key)
	})

	It("empties the Secret of a deleted key that a foreign finalizer keeps (secret-scrubber)", func() {
		key, _ := issuedKey("held")
		update(secretOf(key), func(s *corev1.Secret) { controllerutil.AddFinalizer(s, foreignFinalizer) })

		Expect(k8s.Delete(ctx, key)).To(Succeed())
		Eventually(secretGoneOrEmpty(key), timeout, interval).Should(Equal("emptied and terminating"))
		releaseFinalizer(key)
	})

	It("destroys a revoked key's Secret stripped of its owner reference and a label", func() {
		key, _ := issuedKey("stripped")

		update(secretOf(key), func(s *corev1.Secret) {
			s.OwnerReferences = nil
			delete(s.Labels, secrets.LabelAccessKey)
		})
		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		eventuallyPhase(key, keyward.PhaseRevoked)
		Eventually(secretGoneOrEmpty(key), timeout, interval).Should(Equal("gone"))
	})
})

var _ = Describe("A look-alike Secret, never adopted into use", func() {
	It("reports a look-alike with Keyward's labels and the key ID as a conflict and leaves it alone", func() {
		key, active := issuedKey("looks")

		// Someone else's material under the key's name, labels and key ID.
		planted, err := keyformat.Generate()
		Expect(err).NotTo(HaveOccurred())
		update(secretOf(key), func(s *corev1.Secret) {
			s.OwnerReferences = nil
			s.Data[secrets.DataAccessKey] = []byte(keyformat.Key{ID: active.Status.KeyID, Secret: planted.Secret}.Plaintext())
		})
		pending := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonSecretNameConflict)
		Expect(pending.Status.KeyID).To(Equal(active.Status.KeyID), "no material was issued into the look-alike")
		Consistently(func() string {
			m, _ := secrets.Material(secretOf(key))
			return keyformat.HashSecret(m.Secret)
		}, "2s", interval).Should(Equal(keyformat.HashSecret(planted.Secret)), "the look-alike keeps its own data")
		Expect(metav1.GetControllerOf(secretOf(key))).To(BeNil(), "the look-alike was not adopted")
	})

	It("re-issues into a new Secret, not into an edited one with what others added", func() {
		key, active := issuedKey("fresh")
		old := secretOf(key)

		update(old.DeepCopy(), func(s *corev1.Secret) {
			s.Annotations = map[string]string{"added-by": "someone"}
			s.Data[secrets.DataAccessKey] = []byte("kw_edited_by_hand")
		})
		Eventually(func(g Gomega) {
			s := secretOf(key)
			g.Expect(s).NotTo(BeNil())
			g.Expect(s.UID).NotTo(Equal(old.UID), "a new Secret")
			g.Expect(s.Annotations).NotTo(HaveKey("added-by"))
			g.Expect(get(key.DeepCopy()).Status.KeyID).NotTo(Equal(active.Status.KeyID))
		}, timeout, interval).Should(Succeed())
		Expect(materialOf(key).ID).To(Equal(get(key.DeepCopy()).Status.KeyID))
		eventuallyPhase(key, keyward.PhaseActive)
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("SecretRecreated"))
	})
})

var _ = Describe("A key's tie to its Application's UID", func() {
	It("never ties old keys to an Application deleted and created again (kubectl replace --force)", func() {
		ns := newTenant()
		app := newApp(ns, "replaced", withMaxKeys(5))
		key := newKey(ns, "k", "replaced")
		eventuallyPhase(key, keyward.PhaseActive)
		Eventually(func() []metav1.OwnerReference { return get(key.DeepCopy()).OwnerReferences }, timeout, interval).
			Should(ContainElement(HaveField("UID", get(app).UID)))

		Expect(k8s.Delete(ctx, app)).To(Succeed())
		again := newApp(ns, "replaced", withMaxKeys(5), withScopes(keyward.Scope{Name: "admin", Access: keyward.ReadWrite}))
		Eventually(func(g Gomega) {
			var k keyward.AccessKey
			err := k8s.Get(ctx, client.ObjectKeyFromObject(key), &k)
			if apierrors.IsNotFound(err) {
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			for _, ref := range k.OwnerReferences {
				Expect(ref.UID).NotTo(Equal(again.UID), "the key was tied to the new Application")
			}
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the garbage collector deletes the key; it is %s/%s", k.Status.Phase, readyReason(&k))
		}, timeout, interval).Should(Succeed())

		// A key created now belongs to the new Application.
		fresh := newKey(ns, "fresh", "replaced")
		eventuallyPhase(fresh, keyward.PhaseActive)
	})
})

var _ = Describe("A key Pending on a refused Secret, which holds no slot", func() {
	It("lets a younger key take the slot, and retries when its spec changes", func() {
		ns := newTenant()
		newApp(ns, "one", withMaxKeys(1))
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
			StringData: map[string]string{"password": "not a key"}})).To(Succeed())
		blocked := newKey(ns, "blocked", "one", func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate = &keyward.SecretTemplate{Name: "taken"}
		})
		p := eventuallyPhase(blocked, keyward.PhasePending, keyward.ReasonSecretNameConflict)
		Expect(readyMessage(p)).To(ContainSubstring(`"taken"`))

		next := newKey(ns, "next", "one")
		eventuallyPhase(next, keyward.PhaseActive)
		consistentlyPhase(blocked, keyward.PhasePending, time.Second)

		// A change of its spec retries it: now the limit decides.
		update(blocked, func(k *keyward.AccessKey) { k.Spec.Description = "retry" })
		eventuallyPhase(blocked, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded)
	})
})

var _ = Describe("Every key's status, written with a bounded message", func() {
	It("records a long rotate annotation by its hash and acts on it once", func() {
		ns := newTenant()
		newApp(ns, "long")
		first := strings.Repeat("r", 100*1024)
		key := newKey(ns, "k", "long", func(k *keyward.AccessKey) {
			k.Annotations = map[string]string{keyward.RotateAnnotation: first}
		})
		issued := eventuallyPhase(key, keyward.PhaseActive)
		Expect(issued.Status.Rotation.LastRequest).To(Equal(sha256Of(first)))

		second := strings.Repeat("s", 100*1024)
		update(key, func(k *keyward.AccessKey) { k.Annotations[keyward.RotateAnnotation] = second })
		Eventually(func() string { return get(key.DeepCopy()).Status.Rotation.LastRequest }, timeout, interval).
			Should(Equal(sha256Of(second)))
		rotated := get(key.DeepCopy())
		Expect(rotated.Status.KeyID).NotTo(Equal(issued.Status.KeyID))

		// Re-applying the same value does nothing.
		update(key, func(k *keyward.AccessKey) { k.Spec.Description = "re-applied" })
		Eventually(func() int64 { return get(key.DeepCopy()).Status.ObservedGeneration }, timeout, interval).
			Should(Equal(get(key.DeepCopy()).Generation))
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(rotated.Status.KeyID))
	})

	It("bounds the message for a huge invalid Secret template and never echoes it", func() {
		ns := newTenant()
		newApp(ns, "huge")
		labels := map[string]string{}
		for i := 0; i < 32; i++ {
			// The name part is a valid label; the uppercase prefix is not.
			labels[fmt.Sprintf("%s%02d.example/x", strings.Repeat("Q", 280), i)] = "v"
		}
		key := newKey(ns, "k", "huge", func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate = &keyward.SecretTemplate{Labels: labels}
		})
		p := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonSecretInvalid)
		msg := readyMessage(p)
		Expect(len(msg)).To(BeNumerically("<=", 1024))
		Expect(msg).NotTo(ContainSubstring("QQQQ"), "the template is not echoed")
		Expect(msg).To(ContainSubstring("spec.secretTemplate.labels"))
		Expect(hasSecret(key)).To(BeFalse())
	})
})

var _ = Describe("An Application's Ready condition while the tenant's keys are off", func() {
	It("is not Ready while the tenant's API keys are off", func() {
		ns := newNamespace()
		app := newApp(ns, "off")
		Eventually(func(g Gomega) {
			c := meta.FindStatusCondition(get(app.DeepCopy()).Status.Conditions, keyward.ConditionReady)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(keyward.ReasonAPIKeysDisabled))
		}, timeout, interval).Should(Succeed())
	})
})

func sha256Of(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

var _ = Describe("TenantSettings and Application status on unusable tenant settings", Serial, func() {
	It("reports Ready=False with InvalidTenantSettings on both", func() {
		ns, _, _ := unreadableLifetimeTenant()
		app := newApp(ns, "app")
		settings := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}
		Eventually(func(g Gomega) {
			for _, conds := range [][]metav1.Condition{get(settings.DeepCopy()).Status.Conditions, get(app.DeepCopy()).Status.Conditions} {
				c := meta.FindStatusCondition(conds, keyward.ConditionReady)
				g.Expect(c).NotTo(BeNil())
				g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(c.Reason).To(Equal(keyward.ReasonInvalidTenantSettings))
				g.Expect(c.Message).To(ContainSubstring("spec.maxKeyLifetime"))
			}
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("Tenant isolation: an object whose spec the restored CRD refuses", Serial, func() {
	It("is not retried while every status write of it is refused, and is reported again once its spec is fixed", func() {
		ns, _, restore := unreadableLifetimeTenant()
		newApp(ns, "app")
		settings := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: keyward.TenantSettingsName}}
		readyReasonOfSettings := func() string {
			if c := meta.FindStatusCondition(get(settings.DeepCopy()).Status.Conditions, keyward.ConditionReady); c != nil {
				return c.Reason
			}
			return ""
		}
		Eventually(readyReasonOfSettings, timeout, interval).Should(Equal(keyward.ReasonInvalidTenantSettings))

		By("the CRD restored: the API server now refuses every status write of the TenantSettings")
		restore()
		errorsBefore := reconcileErrors("tenantsettings-status")
		eventuallyPhase(newKey(ns, "k", "app"), keyward.PhasePending, keyward.ReasonInvalidTenantSettings)
		// The new key changes the tenant's counts: one refused write, then
		// nothing until the spec changes (no retries with back-off).
		Consistently(func() float64 { return reconcileErrors("tenantsettings-status") - errorsBefore }, 4*controllers.CountsDelay, 200*time.Millisecond).
			Should(BeZero())

		By("the spec fixed: the TenantSettings is reported again")
		update(settings.DeepCopy(), func(t *keyward.TenantSettings) { t.Spec.MaxKeyLifetime = keyward.NewDuration(720 * time.Hour) })
		Eventually(readyReasonOfSettings, timeout, interval).ShouldNot(Equal(keyward.ReasonInvalidTenantSettings))
	})
})

var _ = Describe("A status the API server refuses", Serial, func() {
	It("falls back to a minimal status with the phase, the reason and the key's record", func() {
		ns := newTenant()
		newApp(ns, "strict", withMaxKeys(10))
		// A stricter schema than the manager knows: no status.expiresAt is valid.
		tightenAccessKeyStatus("expiresAt")
		Eventually(func() bool {
			probe := newKey(ns, "probe-"+rand.String(5), "strict")
			probe.Status.ExpiresAt = &metav1.Time{Time: time.Now().Add(time.Hour)}
			return apierrors.IsInvalid(k8s.Status().Update(ctx, probe))
		}, timeout, interval).Should(BeTrue(), "the stricter schema is in force")

		key := newKey(ns, "dated", "strict", expiringAt(time.Now().Add(time.Hour)))
		got := eventuallyPhase(key, keyward.PhaseActive, keyward.ReasonIssued)
		Expect(readyMessage(got)).To(HavePrefix("the full status could not be written"))
		Expect(got.Status.KeyID).NotTo(BeEmpty())
		Expect(got.Status.IssuedAt).NotTo(BeNil())
		Expect(got.Status.ExpiresAt).To(BeNil())
		Expect(materialOf(key).ID).To(Equal(got.Status.KeyID), "the written Secret is recorded")
		consistentlyPhase(key, keyward.PhaseActive, time.Second)
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(got.Status.KeyID), "not issued again")
	})
})

// tightenAccessKeyStatus makes the AccessKey CRD refuse any value of the
// given status field (until the spec ends).
func tightenAccessKeyStatus(field string) {
	GinkgoHelper()
	editCRDSchema("accesskeys", func(schema map[string]any) {
		schema["properties"].(map[string]any)["status"].(map[string]any)["properties"].(map[string]any)[field].(map[string]any)["maxLength"] = int64(1)
	})
}

// issuedKey makes a tenant with an Application named app and one key under
// it, and returns the key and its Active object once its material has been
// read (so the leak check looks for it).
func issuedKey(app string) (key, active *keyward.AccessKey) {
	GinkgoHelper()
	ns := newTenant()
	newApp(ns, app)
	key = newKey(ns, "k", app)
	active = eventuallyPhase(key, keyward.PhaseActive)
	materialOf(key)
	return key, active
}
