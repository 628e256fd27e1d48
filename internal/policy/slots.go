package policy

import (
	"fmt"
	"sort"
	"time"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SlotOutcome is what the limits decide for one key.
type SlotOutcome int

const (
	// SlotHeld: the key was issued before and keeps its slot, whatever the
	// limits say now (limits apply to new keys only).
	SlotHeld SlotOutcome = iota
	// SlotGranted: a new key is within both limits and may be issued.
	SlotGranted
	// SlotSettling: the key would be granted, but keys created in the same
	// second may not all be observed yet; it holds its place and waits.
	SlotSettling
	// SlotDenied: a limit is full; the key is Rejected until a slot frees.
	SlotDenied
	// SlotNotCandidate: the key does not compete (being deleted, revoked
	// before issue, application missing, scopes beyond the application).
	SlotNotCandidate
)

// SlotDecision is the outcome for one key with its reason when denied.
type SlotDecision struct {
	Outcome SlotOutcome
	Reason  string // ApplicationLimitExceeded or OwnerLimitExceeded when denied
	Message string
	// SettledAt is when a settling key may be issued.
	SettledAt time.Time
}

// IsIssued reports whether key material was ever issued for the key.
func IsIssued(k *keyward.AccessKey) bool { return k.Status.IssuedAt != nil }

// AllocateSlots decides, for every key of one namespace, whether it holds a
// slot under its Application's maxAccessKeys and the tenant's
// maxKeysPerOwner. Issued keys always keep theirs. The remaining slots go to
// waiting keys oldest first (creationTimestamp, then name), so the result is
// the same whichever key is reconciled first and concurrent creates can
// never overshoot. A waiting key that would be granted still settles until
// settle has passed after the end of its creation second: creation
// timestamps have one-second resolution, so only then have all keys that
// rank before it been created and observed.
//
// apps holds the namespace's Applications by name. Keys without an owner
// (possible only where the owner-stamping admission policy is not
// installed) share one owner's limit, so that leaving the owner out is no
// way around maxKeysPerOwner. The tenant's maxKeys bounds all keys of the
// namespace together.
func AllocateSlots(keys []keyward.AccessKey, apps map[string]*keyward.Application, t Tenant, now time.Time, settle time.Duration) map[string]SlotDecision {
	out := make(map[string]SlotDecision, len(keys))
	usedByApp := map[string]int32{}
	usedByOwner := map[string]int32{}
	var usedByTenant int32
	var waiting []*keyward.AccessKey

	for i := range keys {
		k := &keys[i]
		switch {
		case !k.DeletionTimestamp.IsZero():
			out[k.Name] = SlotDecision{Outcome: SlotNotCandidate}
		case IsIssued(k):
			out[k.Name] = SlotDecision{Outcome: SlotHeld}
			usedByApp[k.Spec.Application]++
			usedByOwner[k.Spec.Owner]++
			usedByTenant++
		case k.Spec.Revoked || apps[k.Spec.Application] == nil || CheckScopes(k, apps[k.Spec.Application]) != nil:
			out[k.Name] = SlotDecision{Outcome: SlotNotCandidate}
		default:
			waiting = append(waiting, k)
		}
	}

	sort.Slice(waiting, func(i, j int) bool { return olderThan(waiting[i], waiting[j]) })
	for _, k := range waiting {
		app := apps[k.Spec.Application]
		if usedByApp[k.Spec.Application] >= maxAccessKeys(app) {
			out[k.Name] = SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonApplicationLimitExceeded,
				Message: fmt.Sprintf("application %q already holds its maximum of %d keys; delete one to make room", app.Name, maxAccessKeys(app))}
			continue
		}
		if usedByOwner[k.Spec.Owner] >= t.MaxKeysPerOwner {
			out[k.Name] = SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonOwnerLimitExceeded,
				Message: fmt.Sprintf("%s already holds the tenant's maximum of %d keys; delete one to make room", ownerName(k.Spec.Owner), t.MaxKeysPerOwner)}
			continue
		}
		if usedByTenant >= t.MaxKeys {
			out[k.Name] = SlotDecision{Outcome: SlotDenied, Reason: keyward.ReasonTenantLimitExceeded,
				Message: fmt.Sprintf("the tenant already holds its maximum of %d keys (TenantSettings spec.maxKeys); delete one to make room", t.MaxKeys)}
			continue
		}
		usedByApp[k.Spec.Application]++
		usedByOwner[k.Spec.Owner]++
		usedByTenant++
		settledAt := k.CreationTimestamp.Add(time.Second + settle)
		if now.Before(settledAt) {
			out[k.Name] = SlotDecision{Outcome: SlotSettling, SettledAt: settledAt}
			continue
		}
		out[k.Name] = SlotDecision{Outcome: SlotGranted}
	}
	return out
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
