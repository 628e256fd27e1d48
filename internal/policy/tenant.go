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
	// ExpiryWarning: keys expiring within it count as expiringSoon.
	ExpiryWarning time.Duration
}

// TenantFrom derives the policy in force from a namespace's TenantSettings
// (nil when there is none) and the manager-wide default of the switch.
func TenantFrom(ts *keyward.TenantSettings, enabledByDefault bool) Tenant {
	t := Tenant{
		Enabled:         enabledByDefault,
		MaxKeysPerOwner: keyward.DefaultMaxKeysPerOwner,
		ExpiryWarning:   mustDuration(keyward.DefaultExpiryWarning),
	}
	if ts == nil || ts.Name != keyward.TenantSettingsName || !ts.DeletionTimestamp.IsZero() {
		return t
	}
	if ts.Spec.APIKeysEnabled != nil {
		t.Enabled = *ts.Spec.APIKeysEnabled
	}
	if ts.Spec.MaxKeyLifetime != nil && ts.Spec.MaxKeyLifetime.Duration > 0 {
		t.MaxKeyLifetime = ts.Spec.MaxKeyLifetime.Duration
	}
	if ts.Spec.MaxKeysPerOwner > 0 {
		t.MaxKeysPerOwner = ts.Spec.MaxKeysPerOwner
	}
	if ts.Spec.ExpiryWarning != nil && ts.Spec.ExpiryWarning.Duration >= 0 {
		t.ExpiryWarning = ts.Spec.ExpiryWarning.Duration
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
