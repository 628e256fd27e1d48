package policy

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Rotation rules that fit workloads (docs/lifecycle.md#rotation): how long
// the outgoing key keeps verifying, and a rotation that renews the
// lifetime.

// RotationGrace is how long the key material a rotation replaces keeps
// verifying: the key's spec.rotation.gracePeriod when it is set (0s
// included: a rotation because the key leaked), else the tenant's
// rotationGracePeriod (5m by default, which covers the kubelet's refresh
// of a mounted Secret).
func RotationGrace(k *keyward.AccessKey, t Tenant) time.Duration {
	if k.Spec.Rotation != nil && k.Spec.Rotation.GracePeriod != nil {
		return GracePeriod(k)
	}
	return t.RotationGracePeriod
}

// RotatedOutKey is status.previousKey right after a rotation at now: the
// outgoing key, valid for RotationGrace, and never past its own effective
// expiry (PreviousKeyAfter), which a renewing rotation does not move.
// Nil when there is no grace or nothing to keep.
func RotatedOutKey(k *keyward.AccessKey, t Tenant, now time.Time) *keyward.PreviousKey {
	grace := RotationGrace(k, t)
	if grace == 0 || k.Status.KeyID == "" || k.Status.SecretHash == "" {
		return nil
	}
	outgoing := k.DeepCopy()
	outgoing.Status.PreviousKey = &keyward.PreviousKey{KeyID: k.Status.KeyID, SecretHash: k.Status.SecretHash,
		ValidUntil: metav1.NewTime(now.Add(grace))}
	return PreviousKeyAfter(outgoing, false, now)
}

// RenewsLifetime reports whether a rotation of k starts a new lifetime
// for the new key material (spec.rotation.renewLifetime).
func RenewsLifetime(k *keyward.AccessKey) bool {
	return k.Spec.Rotation != nil && k.Spec.Rotation.RenewLifetime
}

// RenewedLifetime is the lifetime limit and effective expiry of the key
// material a renewing rotation issues at now: the rule of a first issue
// (LifetimeLimit, EffectiveExpiry) with the tenant's maxKeyLifetime in
// force now, so renewed material never gets more than a new key would.
// requested is spec.expiresAt (nil for never).
func RenewedLifetime(requested *metav1.Time, t Tenant, now time.Time) (limit, expiresAt *metav1.Time) {
	limit = LifetimeLimit(now, t)
	return limit, EffectiveExpiry(requested, limit)
}
