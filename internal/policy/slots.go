package policy

import (
	"fmt"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SlotOutcome is what the limits decide for one key.
type SlotOutcome int

const (
	// SlotHeld: the key holds a slot already: it was issued (and keeps its
	// slot whatever the limits say now: limits apply to new keys only), or
	// it was granted one whose issue is not recorded yet. A key being
	// deleted keeps the slot it held until it is gone.
	SlotHeld SlotOutcome = iota
	// SlotGranted: a waiting key is within every limit and may be issued.
	SlotGranted
	// SlotDenied: a limit is full; the key is Rejected until a slot frees.
	SlotDenied
	// SlotNotCandidate: the key does not compete (being deleted without
	// holding a slot, revoked before issue, application missing or replaced, scopes beyond the
	// application, or Pending because its Secret was refused).
	SlotNotCandidate
)

// SlotDecision is the outcome for one key with its reason when denied.
type SlotDecision struct {
	Outcome SlotOutcome
	Reason  string // ApplicationLimitExceeded, OwnerLimitExceeded or TenantLimitExceeded when denied
	Message string
}

// IsIssued reports whether key material was ever issued for the key.
func IsIssued(k *keyward.AccessKey) bool { return k.Status.IssuedAt != nil }

// slotFor decides for a waiting key of app, given the slots its
// Application, its owner and the tenant use so far: granted, or denied by
// the first limit that is full (the Application's, the owner's, the
// tenant's), with a message that says which and how to make room.
func slotFor(k *keyward.AccessKey, app *keyward.Application, t Tenant, usedByApp, usedByOwner, usedByTenant int32) SlotDecision {
	switch {
	case usedByApp >= maxAccessKeys(app):
		return SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonApplicationLimitExceeded,
			Message: fmt.Sprintf("application %q already holds its maximum of %d keys; delete one to make room", app.Name, maxAccessKeys(app))}
	case usedByOwner >= t.MaxKeysPerOwner:
		return SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonOwnerLimitExceeded,
			Message: fmt.Sprintf("%s already holds the tenant's maximum of %d keys; delete one to make room", ownerName(k.Spec.Owner), t.MaxKeysPerOwner)}
	case usedByTenant >= t.MaxKeys:
		return SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonTenantLimitExceeded,
			Message: fmt.Sprintf("the tenant already holds its maximum of %d keys (TenantSettings spec.maxKeys); delete one to make room", t.MaxKeys)}
	}
	return SlotDecision{Outcome: SlotGranted}
}

func olderThan(a, b *keyward.AccessKey) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func maxAccessKeys(app *keyward.Application) int32 {
	if app.Spec.MaxAccessKeys > 0 {
		return app.Spec.MaxAccessKeys
	}
	return keyward.DefaultMaxAccessKeys
}

func ownerName(owner string) string {
	if owner == "" {
		return "keys without an owner together"
	}
	return fmt.Sprintf("owner %q", owner)
}
