package controllers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/secrets"
)

// One Describe per acceptance behaviour (docs/kinds.md, docs/lifecycle.md), each asserting what a user
// observes through the API server.

var _ = Describe("A key's Application, which cannot change", func() {
	It("rejects a change of spec.application with a clear message", func() {
		ns := newTenant()
		newApp(ns, "billing")
		newApp(ns, "reports")
		key := newKey(ns, "k", "billing")
		eventuallyPhase(key, keyward.PhaseActive)

		get(key).Spec.Application = "reports"
		err := k8s.Update(ctx, key)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.application is immutable"))
	})
})

var _ = Describe("An Application's key limit, 2 by default", func() {
	It("rejects a 3rd key until one is deleted, then issues it", func() {
		ns := newTenant()
		app := newApp(ns, "devices")
		Expect(get(app).Spec.MaxAccessKeys).To(Equal(int32(2)), "defaulted by the API server")
		first := newKey(ns, "first", "devices")
		eventuallyPhase(first, keyward.PhaseActive)
		second := newKey(ns, "second", "devices")
		eventuallyPhase(second, keyward.PhaseActive)
		third := newKey(ns, "third", "devices")
		rejected := eventuallyPhase(third, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded)
		Expect(readyMessage(rejected)).To(ContainSubstring("maximum of 2"))
		Expect(hasSecret(third)).To(BeFalse())
		Eventually(eventReasons(third), timeout, interval).Should(ContainElement("LimitExceeded"))

		Expect(k8s.Delete(ctx, first)).To(Succeed())
		eventuallyPhase(third, keyward.PhaseActive, keyward.ReasonIssued)
		Expect(hasSecret(third)).To(BeTrue())
	})
})

var _ = Describe("Key material: the full key only in its Secret, the public key ID in status", func() {
	It("stores the key in a labelled, owned Secret and only its ID and hash in status", func() {
		ns := newTenant()
		newApp(ns, "portal")
		key := newKey(ns, "web", "portal", func(k *keyward.AccessKey) {
			k.Labels = map[string]string{"argocd.argoproj.io/instance": "portal"}
			k.Spec.SecretTemplate = &keyward.SecretTemplate{Name: "portal-web-key",
				Labels: map[string]string{"team": "web"}, Annotations: map[string]string{"note": "mounted by web"}}
		})
		active := eventuallyPhase(key, keyward.PhaseActive, keyward.ReasonIssued)

		s := secretOf(key)
		Expect(s.Name).To(Equal("portal-web-key"))
		Expect(string(s.Type)).To(Equal("keyward.dev/access-key"))
		Expect(s.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "keyward"))
		Expect(s.Labels).To(HaveKeyWithValue("keyward.dev/access-key", "web"))
		Expect(s.Labels).To(HaveKeyWithValue("team", "web"))
		Expect(s.Labels).NotTo(HaveKey("argocd.argoproj.io/instance"), "the AccessKey's labels are not copied")
		Expect(s.Annotations).To(HaveKeyWithValue("note", "mounted by web"))
		Expect(metav1.IsControlledBy(s, active)).To(BeTrue())
		Expect(string(s.Data["keyId"])).To(Equal(active.Status.KeyID))
		Expect(string(s.Data["application"])).To(Equal("portal"))

		m := materialOf(key)
		Expect(strings.HasPrefix(m.Plaintext(), keyformat.Prefix)).To(BeTrue())
		Expect(m.ID).To(Equal(active.Status.KeyID))
		Expect(active.Status.ShortKeyID).To(Equal(active.Status.KeyID[:8]))
		Expect(active.Status.SecretName).To(Equal("portal-web-key"))
		Expect(active.Status.SecretHash).To(HavePrefix("sha256:"))
		Expect(keyformat.SecretMatches(m.Secret, active.Status.SecretHash)).To(BeTrue())
		Expect(active.Status.IssuedAt).NotTo(BeNil())
	})

	It("re-issues fresh key material when a user deletes or edits the Secret", func() {
		ns := newTenant()
		newApp(ns, "portal")
		key := newKey(ns, "web", "portal")
		before := eventuallyPhase(key, keyward.PhaseActive)
		materialOf(key)

		Expect(k8s.Delete(ctx, secretOf(key))).To(Succeed())
		var afterDelete *keyward.AccessKey
		Eventually(func(g Gomega) {
			afterDelete = get(key.DeepCopy())
			g.Expect(afterDelete.Status.KeyID).NotTo(Equal(before.Status.KeyID))
			g.Expect(hasSecret(key)).To(BeTrue())
		}, timeout, interval).Should(Succeed())
		Expect(materialOf(key).ID).To(Equal(afterDelete.Status.KeyID))
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("SecretRecreated"))

		s := secretOf(key)
		s.Data["accessKey"] = []byte("kw_edited_by_hand")
		Expect(k8s.Update(ctx, s)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(get(key.DeepCopy()).Status.KeyID).NotTo(Equal(afterDelete.Status.KeyID))
			m, ok := secrets.Material(secretOf(key))
			g.Expect(ok).To(BeTrue())
			g.Expect(m.ID).To(Equal(get(key.DeepCopy()).Status.KeyID))
		}, timeout, interval).Should(Succeed())
		materialOf(key)
		eventuallyPhase(key, keyward.PhaseActive)
	})
})

var _ = Describe("Expiry on schedule", func() {
	It("expires the key on schedule and restores the same key when the date moves into the future", func() {
		ns := newTenant()
		newApp(ns, "sensors")
		key := newKey(ns, "soon", "sensors", expiringAt(time.Now().Add(6*time.Second)))
		active := eventuallyPhase(key, keyward.PhaseActive)
		original := materialOf(key)

		expired := eventuallyPhase(key, keyward.PhaseExpired, keyward.ReasonExpired)
		Expect(expired.Status.KeyID).To(Equal(active.Status.KeyID))
		Expect(hasSecret(key)).To(BeTrue(), "an expired key keeps its Secret")
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("Expired"))

		update(key, func(k *keyward.AccessKey) { k.Spec.ExpiresAt = keyward.NewTimestamp(time.Now().Add(time.Hour)) })
		restored := eventuallyPhase(key, keyward.PhaseActive)
		Expect(restored.Status.KeyID).To(Equal(active.Status.KeyID))
		Expect(restored.Status.SecretHash).To(Equal(active.Status.SecretHash))
		Expect(fingerprint(materialOf(key))).To(Equal(fingerprint(original)), "the same key material")
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("Reactivated"))
	})
})

var _ = Describe("Deactivating and reactivating a key", func() {
	It("restores the same key", func() {
		ns := newTenant()
		newApp(ns, "sensors")
		key := newKey(ns, "k", "sensors")
		active := eventuallyPhase(key, keyward.PhaseActive)
		original := materialOf(key)

		update(key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
		inactive := eventuallyPhase(key, keyward.PhaseInactive, keyward.ReasonInactive)
		Expect(inactive.Status.KeyID).To(Equal(active.Status.KeyID))
		Expect(hasSecret(key)).To(BeTrue())

		update(key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateActive })
		eventuallyPhase(key, keyward.PhaseActive)
		Expect(fingerprint(materialOf(key))).To(Equal(fingerprint(original)))
		Eventually(eventReasons(key), timeout, interval).Should(ContainElements("Deactivated", "Reactivated"))
	})
})

var _ = Describe("Deleting an Application, which deletes its keys and their Secrets", func() {
	It("cascades through owner references with the real garbage collector", func() {
		ns := newTenant()
		app := newApp(ns, "legacy")
		a := newKey(ns, "a", "legacy")
		b := newKey(ns, "b", "legacy")
		eventuallyPhase(a, keyward.PhaseActive)
		eventuallyPhase(b, keyward.PhaseActive)
		Eventually(func() []metav1.OwnerReference { return get(a.DeepCopy()).OwnerReferences }, timeout, interval).
			Should(ContainElement(HaveField("UID", get(app).UID)))

		Expect(k8s.Delete(ctx, app)).To(Succeed())
		for _, k := range []*keyward.AccessKey{a, b} {
			Eventually(func() bool {
				return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(k), &keyward.AccessKey{}))
			}, timeout, interval).Should(BeTrue(), "key %s deleted", k.Name)
			Eventually(func() bool { return hasSecret(k) }, timeout, interval).Should(BeFalse(), "secret of %s deleted", k.Name)
		}
	})
})

var _ = Describe("Access rights from the Application's group", func() {
	It("defaults the group and changes it for all keys without re-issuing any", func() {
		ns := newTenant()
		app := newApp(ns, "ops")
		Expect(get(app).Spec.Group).To(Equal("Developers"))
		key := newKey(ns, "k", "ops")
		active := eventuallyPhase(key, keyward.PhaseActive)

		update(app, func(a *keyward.Application) { a.Spec.Group = "Administrators" })
		Eventually(func() int64 { return get(app.DeepCopy()).Status.ObservedGeneration }, timeout, interval).
			Should(Equal(get(app).Generation))
		after := get(key.DeepCopy())
		Expect(after.Status.Phase).To(Equal(keyward.PhaseActive))
		Expect(after.Status.KeyID).To(Equal(active.Status.KeyID), "no key is re-issued")
		Expect(after.Status.SecretHash).To(Equal(active.Status.SecretHash))
	})
})

var _ = Describe("Raised key limits and display names up to 255 characters", func() {
	It("issues as many keys as maxAccessKeys allows", func() {
		ns := newTenant()
		newApp(ns, "fleet", withMaxKeys(12))
		var keys []*keyward.AccessKey
		for i := 0; i < 12; i++ {
			keys = append(keys, newKey(ns, name("fleet", i), "fleet"))
		}
		for _, k := range keys {
			eventuallyPhase(k, keyward.PhaseActive)
		}

		thirteenth := newKey(ns, name("fleet", 12), "fleet")
		refused := eventuallyPhase(thirteenth, keyward.PhaseRejected, keyward.ReasonApplicationLimitExceeded)
		Expect(readyMessage(refused)).To(ContainSubstring("maximum of 12"))
		Expect(hasSecret(thirteenth)).To(BeFalse())
	})

	It("accepts a display name of 255 characters and rejects 256", func() {
		ns := newTenant()
		newApp(ns, "names")
		ok := buildKey(ns, "ok", "names", func(k *keyward.AccessKey) { k.Spec.DisplayName = strings.Repeat("n", 255) })
		Expect(k8s.Create(ctx, ok)).To(Succeed())
		tooLong := buildKey(ns, "too-long", "names", func(k *keyward.AccessKey) { k.Spec.DisplayName = strings.Repeat("n", 256) })
		err := k8s.Create(ctx, tooLong)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("spec.displayName"))
		app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "long"},
			Spec: keyward.ApplicationSpec{DisplayName: strings.Repeat("a", 256)}}
		Expect(apierrors.IsInvalid(k8s.Create(ctx, app))).To(BeTrue())
	})
})

var _ = Describe("Scopes with ReadOnly or ReadWrite access, within the Application's", func() {
	It("rejects keys asking beyond the application's scopes and unknown access levels", func() {
		ns := newTenant()
		newApp(ns, "inventory", withMaxKeys(5), withScopes(
			keyward.Scope{Name: "devices", Access: keyward.ReadWrite},
			keyward.Scope{Name: "reports", Access: keyward.ReadOnly}))
		within := newKey(ns, "within", "inventory", keyScopes(
			keyward.Scope{Name: "devices", Access: keyward.ReadOnly}, keyward.Scope{Name: "reports", Access: keyward.ReadOnly}))
		eventuallyPhase(within, keyward.PhaseActive)

		tooMuch := newKey(ns, "too-much", "inventory", keyScopes(keyward.Scope{Name: "reports", Access: keyward.ReadWrite}))
		r := eventuallyPhase(tooMuch, keyward.PhaseRejected, keyward.ReasonScopeNotAllowed)
		Expect(readyMessage(r)).To(ContainSubstring(`"reports"`))
		unknown := newKey(ns, "unknown", "inventory", keyScopes(keyward.Scope{Name: "billing", Access: keyward.ReadOnly}))
		eventuallyPhase(unknown, keyward.PhaseRejected, keyward.ReasonScopeNotAllowed)
		Expect(hasSecret(tooMuch)).To(BeFalse())

		bad := buildKey(ns, "bad-level", "inventory", keyScopes(keyward.Scope{Name: "devices", Access: "Admin"}))
		err := k8s.Create(ctx, bad)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("Unsupported value: \"Admin\""))
	})

	It("rejects an issued key when the application's scopes shrink, and restores it when they grow back", func() {
		ns := newTenant()
		app := newApp(ns, "inventory", withScopes(keyward.Scope{Name: "devices", Access: keyward.ReadWrite}))
		key := newKey(ns, "rw", "inventory", keyScopes(keyward.Scope{Name: "devices", Access: keyward.ReadWrite}))
		active := eventuallyPhase(key, keyward.PhaseActive)

		update(app, func(a *keyward.Application) { a.Spec.Scopes[0].Access = keyward.ReadOnly })
		eventuallyPhase(key, keyward.PhaseRejected, keyward.ReasonScopeNotAllowed)
		update(app, func(a *keyward.Application) { a.Spec.Scopes[0].Access = keyward.ReadWrite })
		restored := eventuallyPhase(key, keyward.PhaseActive)
		Expect(restored.Status.KeyID).To(Equal(active.Status.KeyID))
	})
})

var _ = Describe("A key with an expiry date or none", func() {
	It("keeps a key without expiresAt active with no expiry", func() {
		ns := newTenant()
		newApp(ns, "forever")
		never := newKey(ns, "never", "forever")
		Expect(eventuallyPhase(never, keyward.PhaseActive).Status.ExpiresAt).To(BeNil())
		at := time.Now().Add(48 * time.Hour).Truncate(time.Second)
		dated := newKey(ns, "dated", "forever", expiringAt(at))
		Expect(eventuallyPhase(dated, keyward.PhaseActive).Status.ExpiresAt.Time).To(BeTemporally("==", at))
	})
})

var _ = Describe("Allowed networks, at most 10", func() {
	It("accepts 10 addresses or CIDRs and rejects an 11th or a malformed entry at the API server", func() {
		ns := newTenant()
		newApp(ns, "edge")
		ten := []string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", "172.16.0.0/12",
			"203.0.113.0/24", "198.51.100.7", "100.64.0.0/10", "fd00::/8", "127.0.0.1"}
		ok := newKey(ns, "ten", "edge", func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = ten })
		Expect(eventuallyPhase(ok, keyward.PhaseActive).Spec.AllowedNetworks).To(HaveLen(10))

		eleven := buildKey(ns, "eleven", "edge", func(k *keyward.AccessKey) {
			k.Spec.AllowedNetworks = append(append([]string{}, ten...), "192.0.2.1")
		})
		err := k8s.Create(ctx, eleven)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("spec.allowedNetworks: Too many: 11: must have at most 10 items"))

		bad := buildKey(ns, "bad", "edge", func(k *keyward.AccessKey) { k.Spec.AllowedNetworks = []string{"10.0.0.300"} })
		err = k8s.Create(ctx, bad)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("must be an IPv4/IPv6 address or CIDR"))
	})
})

var _ = Describe("Rotation to new key material", func() {
	It("rotates to new credentials, keeps the old ones for the grace period, and ignores a re-applied request", func() {
		ns := newTenant()
		newApp(ns, "api")
		key := newKey(ns, "rot", "api", func(k *keyward.AccessKey) {
			k.Annotations = map[string]string{keyward.RotateAnnotation: "initial"}
			k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(3 * time.Second)}
		})
		before := eventuallyPhase(key, keyward.PhaseActive)
		Expect(before.Status.Rotation.LastRequest).To(Equal("initial"), "the value present at issue is recorded, not acted on")
		old := materialOf(key)

		update(key, func(k *keyward.AccessKey) { k.Annotations[keyward.RotateAnnotation] = "2026-11-24" })
		var rotated *keyward.AccessKey
		Eventually(func(g Gomega) {
			rotated = get(key.DeepCopy())
			g.Expect(rotated.Status.KeyID).NotTo(Equal(before.Status.KeyID))
			g.Expect(rotated.Status.PreviousKey).NotTo(BeNil())
		}, timeout, interval).Should(Succeed())
		Expect(rotated.Status.PreviousKey.KeyID).To(Equal(old.ID))
		Expect(rotated.Status.PreviousKey.SecretHash).To(Equal(before.Status.SecretHash))
		Expect(rotated.Status.Rotation.LastRequest).To(Equal("2026-11-24"))
		Expect(rotated.Status.LastRotatedAt).NotTo(BeNil())
		fresh := materialOf(key)
		Expect(fresh.ID).To(Equal(rotated.Status.KeyID))
		Expect(fresh.Secret).NotTo(Equal(old.Secret))
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("Rotated"))

		// The grace period ends on schedule: the old key stops verifying.
		Eventually(func() *keyward.PreviousKey { return get(key.DeepCopy()).Status.PreviousKey }, timeout, interval).Should(BeNil())

		// Re-applying the same value (GitOps) does nothing.
		update(key, func(k *keyward.AccessKey) {
			k.Annotations[keyward.RotateAnnotation] = "2026-11-24"
			k.Spec.Description = "re-applied"
		})
		Eventually(func() int64 { return get(key.DeepCopy()).Status.ObservedGeneration }, timeout, interval).
			Should(Equal(get(key.DeepCopy()).Generation))
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(rotated.Status.KeyID))
	})

	It("drops the old key at once with gracePeriod 0s (a leaked key)", func() {
		ns := newTenant()
		newApp(ns, "api")
		key := newKey(ns, "rot", "api", func(k *keyward.AccessKey) {
			k.Spec.Rotation = &keyward.RotationSpec{GracePeriod: keyward.NewDuration(0)}
		})
		before := eventuallyPhase(key, keyward.PhaseActive)
		update(key, func(k *keyward.AccessKey) { k.Annotations = map[string]string{keyward.RotateAnnotation: "now"} })
		Eventually(func() string { return get(key.DeepCopy()).Status.KeyID }, timeout, interval).ShouldNot(Equal(before.Status.KeyID))
		Expect(get(key.DeepCopy()).Status.PreviousKey).To(BeNil())
	})

	It("keeps the old key for the tenant's rotationGracePeriod when the key sets none (5m by default)", func() {
		for _, c := range []struct {
			tenantGrace *keyward.Duration
			want        time.Duration
		}{{nil, 5 * time.Minute}, {keyward.NewDuration(90 * time.Second), 90 * time.Second}} {
			ns := newTenant(func(t *keyward.TenantSettings) { t.Spec.RotationGracePeriod = c.tenantGrace })
			newApp(ns, "api")
			key := newKey(ns, "rot", "api")
			before := eventuallyPhase(key, keyward.PhaseActive)
			update(key, func(k *keyward.AccessKey) { k.Annotations = map[string]string{keyward.RotateAnnotation: "now"} })
			Eventually(func() *keyward.PreviousKey { return get(key.DeepCopy()).Status.PreviousKey }, timeout, interval).ShouldNot(BeNil())
			rotated := get(key.DeepCopy())
			Expect(rotated.Status.PreviousKey.KeyID).To(Equal(before.Status.KeyID))
			Expect(rotated.Status.PreviousKey.ValidUntil.Sub(rotated.Status.LastRotatedAt.Time)).To(Equal(c.want))
		}
	})

	It("renews the lifetime under maxKeyLifetime when a rotation asks for it", func() {
		ns := newTenant(func(t *keyward.TenantSettings) { t.Spec.MaxKeyLifetime = keyward.NewDuration(time.Hour) })
		newApp(ns, "api")
		key := newKey(ns, "renew", "api")
		before := eventuallyPhase(key, keyward.PhaseActive)
		Expect(before.Status.LifetimeLimit).NotTo(BeNil())
		update(key, func(k *keyward.AccessKey) {
			k.Annotations = map[string]string{keyward.RotateAnnotation: "renew"}
			k.Spec.Rotation = &keyward.RotationSpec{RenewLifetime: true}
		})
		Eventually(func() string { return get(key.DeepCopy()).Status.KeyID }, timeout, interval).ShouldNot(Equal(before.Status.KeyID))
		renewed := get(key.DeepCopy())
		Expect(renewed.Status.LifetimeLimit.Time).To(Equal(renewed.Status.LastRotatedAt.Add(time.Hour)))
		Expect(renewed.Status.ExpiresAt.Time).To(Equal(renewed.Status.LifetimeLimit.Time))
		Expect(renewed.Status.IssuedAt.Time).To(Equal(before.Status.IssuedAt.Time))
		Expect(renewed.Status.PreviousKey.ValidUntil.Time).NotTo(BeTemporally(">", before.Status.LifetimeLimit.Time))
	})
})

var _ = Describe("Counts of expired keys and of keys expiring within 30 days", func() {
	It("counts on the Application and on the TenantSettings", func() {
		ns := newTenant()
		newApp(ns, "metrics", withMaxKeys(10))
		newApp(ns, "other")
		newKey(ns, "never", "metrics")
		newKey(ns, "in-a-week", "metrics", expiringAt(time.Now().Add(7*24*time.Hour)))
		newKey(ns, "in-a-year", "metrics", expiringAt(time.Now().Add(365*24*time.Hour)))
		soon := newKey(ns, "in-2s", "metrics", expiringAt(time.Now().Add(2*time.Second)))
		newKey(ns, "elsewhere", "other", expiringAt(time.Now().Add(24*time.Hour)))
		eventuallyPhase(soon, keyward.PhaseExpired)

		Eventually(func() *keyward.KeyCounts {
			return get(&keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "metrics"}}).Status.Keys
		}, timeout, interval).Should(Equal(&keyward.KeyCounts{Total: 4, Active: 3, Expired: 1, ExpiringSoon: 1}))
		Eventually(func() *keyward.KeyCounts {
			return get(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}).Status.Keys
		}, timeout, interval).Should(Equal(&keyward.KeyCounts{Total: 5, Active: 4, Expired: 1, ExpiringSoon: 2}))
	})
})

var _ = Describe("The tenant switch: keys off by default, all of a tenant's keys on or off at once", func() {
	It("keeps keys Pending without TenantSettings and switches every key with the tenant", func() {
		ns := newNamespace()
		newApp(ns, "analytics")
		key := newKey(ns, "k", "analytics")
		eventuallyPhase(key, keyward.PhasePending, keyward.ReasonAPIKeysDisabled)
		Expect(hasSecret(key)).To(BeFalse())

		ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
		Expect(k8s.Create(ctx, ts)).To(Succeed())
		consistentlyPhase(key, keyward.PhasePending, time.Second)
		Eventually(func() *bool { return get(ts).Status.APIKeysEnabled }, timeout, interval).Should(HaveValue(BeFalse()))

		update(ts, func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(true) })
		on := eventuallyPhase(key, keyward.PhaseActive)
		original := materialOf(key)

		update(ts, func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(false) })
		off := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonAPIKeysDisabled)
		Expect(off.Status.KeyID).To(Equal(on.Status.KeyID), "key material is kept")
		Expect(hasSecret(key)).To(BeTrue())

		update(ts, func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(true) })
		eventuallyPhase(key, keyward.PhaseActive)
		Expect(fingerprint(materialOf(key))).To(Equal(fingerprint(original)), "switching on restores the same key")
	})

	It("rejects a TenantSettings not named default", func() {
		ns := newNamespace()
		err := k8s.Create(ctx, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}})
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("TenantSettings must be named 'default'"))
	})
})

var _ = Describe("The tenant's maximum key lifetime, for new keys only", func() {
	It("bounds keys issued after it is set and leaves earlier keys alone", func() {
		ns := newTenant()
		newApp(ns, "lifetimes", withMaxKeys(5))
		early := newKey(ns, "early", "lifetimes")
		Expect(eventuallyPhase(early, keyward.PhaseActive).Status.ExpiresAt).To(BeNil())

		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}, func(t *keyward.TenantSettings) {
			t.Spec.MaxKeyLifetime = keyward.NewDuration(24 * time.Hour)
		})
		Eventually(func() bool {
			t := get(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}})
			return t.Status.ObservedGeneration == t.Generation
		}, timeout, interval).Should(BeTrue())

		never := newKey(ns, "never", "lifetimes")
		n := eventuallyPhase(never, keyward.PhaseActive)
		Expect(n.Status.ExpiresAt).NotTo(BeNil(), "a key asking for never gets the maximum")
		Expect(n.Status.ExpiresAt.Time).To(BeTemporally("~", n.Status.IssuedAt.Add(24*time.Hour), time.Second))

		far := newKey(ns, "far", "lifetimes", expiringAt(time.Now().Add(90*24*time.Hour)))
		f := eventuallyPhase(far, keyward.PhaseActive)
		Expect(f.Status.ExpiresAt.Time).To(BeTemporally("~", f.Status.IssuedAt.Add(24*time.Hour), time.Second))
		nearAt := time.Now().Add(time.Hour).Truncate(time.Second)
		near := newKey(ns, "near", "lifetimes", expiringAt(nearAt))
		Expect(eventuallyPhase(near, keyward.PhaseActive).Status.ExpiresAt.Time).To(BeTemporally("==", nearAt))

		Expect(get(early).Status.ExpiresAt).To(BeNil(), "keys issued before are not changed")
	})

	It("rejects a negative or malformed lifetime at the API server", func() {
		ns := newNamespace()
		ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
			Spec: keyward.TenantSettingsSpec{MaxKeyLifetime: keyward.NewDuration(-time.Hour)}}
		err := k8s.Create(ctx, ts)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("maxKeyLifetime must be a positive duration"))
	})
})

var _ = Describe("The tenant's limit of keys per owner, for new keys only", func() {
	It("rejects an owner's key beyond the limit and keeps existing keys when the limit is lowered", func() {
		ns := newTenant(func(t *keyward.TenantSettings) { t.Spec.MaxKeysPerOwner = 2 })
		newApp(ns, "a", withMaxKeys(10))
		newApp(ns, "b", withMaxKeys(10))
		k1 := newKey(ns, "bob-1", "a", ownedBy("bob"))
		eventuallyPhase(k1, keyward.PhaseActive)
		k2 := newKey(ns, "bob-2", "b", ownedBy("bob"))
		eventuallyPhase(k2, keyward.PhaseActive)
		k3 := newKey(ns, "bob-3", "a", ownedBy("bob"))
		r := eventuallyPhase(k3, keyward.PhaseRejected, keyward.ReasonOwnerLimitExceeded)
		Expect(readyMessage(r)).To(ContainSubstring(`owner "bob"`))
		carol := newKey(ns, "carol-1", "a", ownedBy("carol"))
		eventuallyPhase(carol, keyward.PhaseActive)

		update(&keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}, func(t *keyward.TenantSettings) {
			t.Spec.MaxKeysPerOwner = 1
		})
		consistentlyPhase(k2, keyward.PhaseActive, time.Second)
		eventuallyPhase(k1, keyward.PhaseActive)
	})

	It("validates maxKeysPerOwner within 1..1000", func() {
		for _, n := range []int32{-1, 1001} {
			ns := newNamespace()
			err := k8s.Create(ctx, &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
				Spec: keyward.TenantSettingsSpec{MaxKeysPerOwner: n}})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "maxKeysPerOwner %d", n)
			Expect(err.Error()).To(ContainSubstring("spec.maxKeysPerOwner"))
		}
	})
})

var _ = Describe("Revocation, which cannot be undone", func() {
	It("destroys the key material and refuses to un-revoke", func() {
		ns := newTenant()
		newApp(ns, "payments")
		key := newKey(ns, "k", "payments")
		active := eventuallyPhase(key, keyward.PhaseActive)

		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		revoked := eventuallyPhase(key, keyward.PhaseRevoked, keyward.ReasonRevoked)
		Expect(revoked.Status.SecretHash).To(BeEmpty())
		Expect(revoked.Status.KeyID).To(Equal(active.Status.KeyID), "the public ID stays for audit")
		Eventually(func() bool { return hasSecret(key) }, timeout, interval).Should(BeFalse())
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("Revoked"))

		get(key).Spec.Revoked = false
		err := k8s.Update(ctx, key)
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.Error()).To(ContainSubstring("revocation is irreversible"))
		consistentlyPhase(key, keyward.PhaseRevoked, time.Second)
	})
})

var _ = Describe("The phases Active, Expired and Revoked", func() {
	It("shows each phase in the printer columns' fields", func() {
		ns := newTenant()
		newApp(ns, "statuses", withMaxKeys(3))
		a := newKey(ns, "active", "statuses")
		e := newKey(ns, "expired", "statuses", expiringAt(time.Now().Add(-time.Minute)))
		r := newKey(ns, "revoked", "statuses", func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		active := eventuallyPhase(a, keyward.PhaseActive)
		eventuallyPhase(e, keyward.PhaseExpired)
		eventuallyPhase(r, keyward.PhaseRevoked)

		// What `kubectl get accesskeys` prints: the API server's Table,
		// built from the CRD's additionalPrinterColumns.
		rows := printedColumns(ns, "accesskeys")
		Expect(rows).To(HaveLen(3))
		for name, phase := range map[string]keyward.KeyPhase{"active": keyward.PhaseActive, "expired": keyward.PhaseExpired, "revoked": keyward.PhaseRevoked} {
			Expect(rows).To(HaveKeyWithValue(name, HaveKeyWithValue("Phase", string(phase))), "the Phase column of %s", name)
			Expect(rows[name]).To(HaveKeyWithValue("Application", "statuses"))
		}
		Expect(rows["active"]).To(HaveKeyWithValue("Key ID", active.Status.ShortKeyID))
		Expect(rows["expired"]).To(HaveKeyWithValue("Expires", Not(BeNil())))
	})
})

var _ = Describe("Events of key activity", func() {
	It("records an Event for every transition", func() {
		ns := newTenant()
		newApp(ns, "audit")
		key := newKey(ns, "k", "audit")
		eventuallyPhase(key, keyward.PhaseActive)
		update(key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })
		eventuallyPhase(key, keyward.PhaseInactive)
		update(key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateActive })
		eventuallyPhase(key, keyward.PhaseActive)
		update(key, func(k *keyward.AccessKey) { k.Annotations = map[string]string{keyward.RotateAnnotation: "1"} })
		Eventually(eventReasons(key), timeout, interval).Should(ContainElement("Rotated"))
		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		eventuallyPhase(key, keyward.PhaseRevoked)
		Eventually(eventReasons(key), timeout, interval).Should(ContainElements(
			"Issued", "Deactivated", "Reactivated", "Rotated", "Revoked"))
	})
})

var _ = Describe("Searching keys by name, key ID and owner", func() {
	It("serves field selectors on spec.application, spec.owner, status.phase and status.keyID", func() {
		ns := newTenant()
		newApp(ns, "search", withMaxKeys(5))
		newApp(ns, "other")
		dave := newKey(ns, "dave-key", "search", ownedBy("dave"))
		newKey(ns, "erin-key", "search", ownedBy("erin"))
		newKey(ns, "other-key", "other", ownedBy("dave"))
		found := eventuallyPhase(dave, keyward.PhaseActive)

		names := func(fields client.MatchingFields) []string {
			var list keyward.AccessKeyList
			Expect(k8s.List(ctx, &list, client.InNamespace(ns), fields)).To(Succeed())
			var out []string
			for _, k := range list.Items {
				out = append(out, k.Name)
			}
			return out
		}
		Expect(names(client.MatchingFields{"spec.owner": "dave"})).To(ConsistOf("dave-key", "other-key"))
		Expect(names(client.MatchingFields{"spec.application": "search"})).To(ConsistOf("dave-key", "erin-key"))
		Expect(names(client.MatchingFields{"status.keyID": found.Status.KeyID})).To(ConsistOf("dave-key"))
		Eventually(func() []string { return names(client.MatchingFields{"status.phase": "Active"}) }, timeout, interval).
			Should(ConsistOf("dave-key", "erin-key", "other-key"))
		Expect(names(client.MatchingFields{"metadata.name": "erin-key"})).To(ConsistOf("erin-key"))
	})
})

var _ = Describe("Concurrency: limits are decided by the controller, not by admission", func() {
	// Without a settle delay, keys whose creates overlap in time are ranked
	// in the order the manager observes them (docs/limits.md): exactly 2
	// are issued, and a freed slot goes to the oldest waiting key.
	It("issues exactly 2 of 20 keys created in parallel and promotes the oldest rejected one", func() {
		ns := newTenant()
		newApp(ns, "burst")
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer GinkgoRecover()
				defer wg.Done()
				Expect(k8s.Create(ctx, buildKey(ns, name("burst", i), "burst"))).To(Succeed())
			}(i)
		}
		wg.Wait()

		var ranked []keyward.AccessKey
		Eventually(func(g Gomega) {
			var list keyward.AccessKeyList
			g.Expect(k8s.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(20))
			for _, k := range list.Items {
				g.Expect(k.Status.Phase).To(BeElementOf(keyward.PhaseActive, keyward.PhaseRejected), k.Name)
			}
			ranked = oldestFirst(list.Items)
		}, timeout, interval).Should(Succeed())
		var active, rejected []keyward.AccessKey
		for _, k := range ranked {
			if k.Status.Phase == keyward.PhaseActive {
				active = append(active, k)
			} else {
				rejected = append(rejected, k)
			}
		}
		Expect(active).To(HaveLen(2))
		consistentlyPhase(&rejected[0], keyward.PhaseRejected, time.Second)

		Expect(k8s.Delete(ctx, &active[0])).To(Succeed())
		eventuallyPhase(&rejected[0], keyward.PhaseActive)
		for _, k := range rejected[1:] {
			Expect(get(k.DeepCopy()).Status.Phase).To(Equal(keyward.PhaseRejected), k.Name)
		}
	})
})

var _ = Describe("A key whose application does not exist yet", func() {
	It("waits Pending and is issued when the application appears", func() {
		ns := newTenant()
		key := newKey(ns, "early", "later")
		eventuallyPhase(key, keyward.PhasePending, keyward.ReasonApplicationNotFound)
		newApp(ns, "later")
		eventuallyPhase(key, keyward.PhaseActive)
	})
})

// printedColumns reads the namespace's objects of resource (keyward.dev)
// as kubectl get does, as a Table from the API server (the CRD's
// additionalPrinterColumns), and returns each row's cells by column name,
// by object name.
func printedColumns(ns, resource string) map[string]map[string]any {
	GinkgoHelper()
	hc, err := rest.HTTPClientFor(env.Config)
	Expect(err).NotTo(HaveOccurred())
	url := fmt.Sprintf("%s/apis/%s/namespaces/%s/%s", strings.TrimSuffix(env.Config.Host, "/"), keyward.GroupVersion, ns, resource)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	var table metav1.Table
	Expect(json.NewDecoder(resp.Body).Decode(&table)).To(Succeed())
	rows := map[string]map[string]any{}
	for _, row := range table.Rows {
		var meta metav1.PartialObjectMetadata
		Expect(json.Unmarshal(row.Object.Raw, &meta)).To(Succeed())
		Expect(row.Cells).To(HaveLen(len(table.ColumnDefinitions)))
		cells := map[string]any{}
		for i, col := range table.ColumnDefinitions {
			cells[col.Name] = row.Cells[i]
		}
		rows[meta.Name] = cells
	}
	return rows
}

func oldestFirst(keys []keyward.AccessKey) []keyward.AccessKey {
	out := append([]keyward.AccessKey{}, keys...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && older(&out[j], &out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func older(a, b *keyward.AccessKey) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

var _ = Describe("The Secret cache holds only the Secrets Keyward generates", func() {
	It("never sees an unrelated Secret, and still heals a Secret whose labels a user stripped", func() {
		ns := newTenant()
		newApp(ns, "cache")
		key := newKey(ns, "k", "cache")
		active := eventuallyPhase(key, keyward.PhaseActive)
		Expect(k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated"},
			StringData: map[string]string{"password": "hunter2"}})).To(Succeed())

		Eventually(func() error {
			return mgr.GetCache().Get(ctx, client.ObjectKey{Namespace: ns, Name: key.SecretName()}, &corev1.Secret{})
		}, timeout, interval).Should(Succeed(), "Keyward's Secret is cached")
		Consistently(func() bool {
			err := mgr.GetCache().Get(ctx, client.ObjectKey{Namespace: ns, Name: "unrelated"}, &corev1.Secret{})
			return apierrors.IsNotFound(err)
		}, time.Second, interval).Should(BeTrue(), "an unrelated Secret is not cached")

		// Stripping the label hides the Secret from the cache, but the key
		// material is intact: the labels come back, the key stays the same.
		s := secretOf(key)
		delete(s.Labels, secrets.LabelManagedBy)
		Expect(k8s.Update(ctx, s)).To(Succeed())
		Eventually(func() map[string]string { return secretOf(key).Labels }, timeout, interval).
			Should(HaveKeyWithValue(secrets.LabelManagedBy, secrets.ManagedByValue))
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(active.Status.KeyID))
		Expect(eventReasons(key)()).NotTo(ContainElement("SecretRecreated"))
	})
})

var _ = Describe("Bad input never stops the controller", func() {
	It("refuses at the API server what the manager could not decode or label", func() {
		ns := newTenant()
		newApp(ns, "strict")
		raw := func(name string, spec map[string]any) error {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "keyward.dev/v1alpha1", "kind": "AccessKey",
				"metadata": map[string]any{"name": name, "namespace": ns},
				"spec":     spec,
			}}
			return k8s.Create(ctx, u)
		}
		err := raw("grace", map[string]any{"application": "strict", "rotation": map[string]any{"gracePeriod": "1d"}})
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.rotation.gracePeriod"))

		err = raw("lowercase", map[string]any{"application": "strict", "expiresAt": "2030-01-01t00:00:00z"})
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.expiresAt"))

		err = k8s.Create(ctx, buildKey(ns, strings.Repeat("k", 64), "strict"))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("an AccessKey name is at most 63 characters"))

		// The controller still works for everyone else.
		fine := newKey(ns, strings.Repeat("k", 63), "strict")
		eventuallyPhase(fine, keyward.PhaseActive)
	})

	It("reports a Secret template the API server refuses as Pending/SecretInvalid", func() {
		ns := newTenant()
		newApp(ns, "labels")
		key := newKey(ns, "bad-label", "labels", func(k *keyward.AccessKey) {
			k.Spec.SecretTemplate = &keyward.SecretTemplate{Labels: map[string]string{"not a label!": "x"}}
		})
		pending := eventuallyPhase(key, keyward.PhasePending, keyward.ReasonSecretInvalid)
		// The message names the field to fix; it never echoes the template.
		Expect(readyMessage(pending)).To(ContainSubstring("spec.secretTemplate.labels"))
		Expect(readyMessage(pending)).NotTo(ContainSubstring("not a label!"))
		Expect(hasSecret(key)).To(BeFalse())

		update(key, func(k *keyward.AccessKey) { k.Spec.SecretTemplate.Labels = map[string]string{"team": "web"} })
		eventuallyPhase(key, keyward.PhaseActive)
	})
})

var _ = Describe("A Secret whose owner reference a user stripped", func() {
	It("is taken back, and revoking the key still destroys its material", func() {
		ns := newTenant()
		newApp(ns, "orphans")
		key := newKey(ns, "k", "orphans")
		active := eventuallyPhase(key, keyward.PhaseActive)

		s := secretOf(key)
		s.OwnerReferences = nil
		Expect(k8s.Update(ctx, s)).To(Succeed())
		Eventually(func() bool { return metav1.IsControlledBy(secretOf(key), active) }, timeout, interval).
			Should(BeTrue(), "the controller reference is restored")
		Expect(get(key.DeepCopy()).Status.KeyID).To(Equal(active.Status.KeyID), "the same key")

		s = secretOf(key)
		s.OwnerReferences = nil
		Expect(k8s.Update(ctx, s)).To(Succeed())
		update(key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		eventuallyPhase(key, keyward.PhaseRevoked)
		Eventually(func() bool { return hasSecret(key) }, timeout, interval).Should(BeFalse())
	})
})
