// Package policy holds Keyward's decisions as pure functions over observed
// objects: which keys hold a slot, which phase a key is in, when it expires,
// when to look again, and what the counts are. Reconcilers do the I/O around
// them; everything here is unit-tested without a cluster.
package policy

import (
	"fmt"
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

// TenantBlock is why a tenant's keys are neither issued nor verify now: its
// TenantSettings has a value that cannot be used, or its switch is off. The
// reason is the same on every object that shows it; each kind of object
// words the message for itself.
type TenantBlock struct {
	Reason string
	// invalid is the setting that cannot be used ("" when switched off).
	invalid string
}

// Blocked returns what keeps t's keys from being issued and verifying,
// and false when nothing does.
func (t Tenant) Blocked() (TenantBlock, bool) {
	switch {
	case t.Invalid != "":
		return TenantBlock{Reason: keyward.ReasonInvalidTenantSettings, invalid: t.Invalid}, true
	case !t.Enabled:
		return TenantBlock{Reason: keyward.ReasonAPIKeysDisabled}, true
	}
	return TenantBlock{}, false
}

// KeyMessage is the block as a key's Ready message.
func (b TenantBlock) KeyMessage() string {
	if b.invalid != "" {
		return "TenantSettings \"default\": " + b.invalid + "; no key is issued or verifies in this tenant until it is fixed"
	}
	return "API keys are switched off for this tenant (TenantSettings \"default\", spec.apiKeysEnabled); existing key material is kept"
}

// ApplicationMessage is the block as an Application's Ready message.
func (b TenantBlock) ApplicationMessage() string {
	if b.invalid != "" {
		return "TenantSettings \"default\": " + b.invalid + "; no key of this application is issued or verifies"
	}
	return "API keys are switched off in this tenant: no key of this application is issued or verifies"
}

// TenantSettingsCondition is the reason and message of a TenantSettings'
// Ready condition under t.
func TenantSettingsCondition(t Tenant) (reason, message string) {
	b, blocked := t.Blocked()
	switch {
	case !blocked:
		return keyward.ReasonEnabled, "API keys are switched on in this tenant"
	case b.invalid != "":
		return b.Reason, b.invalid + "; no key is issued or verifies in this tenant until it is fixed"
	}
	return b.Reason, "API keys are switched off in this tenant: no key is issued and none verifies"
}

// ApplicationCondition is the reason and message of an Application's Ready
// condition under t, given its key counts.
func ApplicationCondition(t Tenant, app *keyward.Application, counts keyward.KeyCounts) (reason, message string) {
	if b, blocked := t.Blocked(); blocked {
		return b.Reason, b.ApplicationMessage()
	}
	return keyward.ReasonReconciled, fmt.Sprintf("%d of at most %d keys hold a slot", SlotsHeld(counts), app.Spec.MaxAccessKeys)
}
