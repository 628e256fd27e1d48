// Package policy holds Keyward's decisions as pure functions over observed
// objects: which keys hold a slot, which phase a key is in, when it expires,
// when to look again, and what the counts are. Reconcilers do the I/O around
// them; everything here is unit-tested without a cluster.
package policy

import (
	"time"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Tenant is the API-key policy in force in one namespace.
type Tenant struct {
	// Enabled is the tenant's switch: off means no key is issued and no key verifies.
	Enabled bool
	// MaxKeyLifetime bounds keys issued while it is set; 0 means no bound.
	MaxKeyLifetime time.Duration
	// MaxKeysPerOwner bounds how many keys one owner may hold.
	MaxKeysPerOwner int32
	// MaxKeys bounds how many keys the whole tenant may hold.
	MaxKeys int32
	// ExpiryWarning: keys expiring within it count as expiringSoon.
	ExpiryWarning time.Duration
	// RotationGracePeriod is the grace of a rotation whose key does not
	// set spec.rotation.gracePeriod (RotationGrace).
	RotationGracePeriod time.Duration
	// Invalid says which setting cannot be used; no key is issued or
	// verifies while it is set, since its bounds are unknown.
	Invalid string
}

// TenantFrom derives the policy in force from a namespace's TenantSettings
// (nil when there is none) and the manager-wide default of the switch.
func TenantFrom(ts *keyward.TenantSettings, enabledByDefault bool) Tenant {
	t := Tenant{
		Enabled:         enabledByDefault,
		MaxKeysPerOwner: keyward.DefaultMaxKeysPerOwner,
		MaxKeys:         keyward.DefaultMaxKeys,
		ExpiryWarning:   mustDuration(keyward.DefaultExpiryWarning),

		RotationGracePeriod: mustDuration(keyward.DefaultRotationGracePeriod),
	}
	if ts == nil || ts.Name != keyward.TenantSettingsName || !ts.DeletionTimestamp.IsZero() {
		return t
	}
	if ts.Spec.APIKeysEnabled != nil {
		t.Enabled = *ts.Spec.APIKeysEnabled
	}
	if ts.Spec.MaxKeyLifetime != nil {
		d, err := ts.Spec.MaxKeyLifetime.Parse()
		if err != nil {
			t.Invalid = "spec.maxKeyLifetime is " + err.Error()
		}
		t.MaxKeyLifetime = d
	}
	if ts.Spec.MaxKeysPerOwner > 0 {
		t.MaxKeysPerOwner = ts.Spec.MaxKeysPerOwner
	}
	if ts.Spec.MaxKeys > 0 {
		t.MaxKeys = ts.Spec.MaxKeys
	}
	if ts.Spec.ExpiryWarning != nil {
		// A warning window only shapes counts: an unusable one falls back
		// to the default rather than stopping the tenant.
		if d, err := ts.Spec.ExpiryWarning.Parse(); err == nil {
			t.ExpiryWarning = d
		}
	}
	if ts.Spec.RotationGracePeriod != nil {
		// Fail closed, like a key's own grace period: an unusable value
		// keeps no rotated-out key alive.
		d, err := ts.Spec.RotationGracePeriod.Parse()
		if err != nil {
			d = 0
		}
		t.RotationGracePeriod = min(d, keyward.MaxGracePeriod)
	}
	return t
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}
