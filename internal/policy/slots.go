package policy

import (
	"fmt"
	"sort"

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

// Slots is what the limits are decided over: every key of one namespace as
// the manager observes it, its Applications by name, the tenant, and which
// keys not yet recorded as issued hold a slot all the same (granted by this
// manager but not yet in its cache, or holding a Secret whose issue was
// never recorded).
type Slots struct {
	Keys   []*keyward.AccessKey
	Apps   map[string]*keyward.Application
	Tenant Tenant
	Holds  func(*keyward.AccessKey) bool
	// Self is the key asking; it competes even when Refused, since asking
	// is its retry.
	Self string
}

// AllocateSlots decides, for every key of one namespace, whether it holds a
// slot under its Application's maxAccessKeys, the tenant's maxKeysPerOwner
// and the tenant's maxKeys. Keys holding a slot keep it. The remaining slots
// go to waiting keys oldest first (creationTimestamp, then name), so the
// result is the same whichever key is reconciled first, and a waiting key is
// never passed over for one that ranks after it.
//
// Keys without an owner (possible only where the owner-stamping admission
// policy is not installed) share one owner's limit, so that leaving the
// owner out is no way around maxKeysPerOwner.
func AllocateSlots(s Slots) map[string]SlotDecision {
	return allocate(s, nil)
}

// DecideSlot is AllocateSlots for s.Self alone, the question every first
// issue asks. Keys that rank after Self cannot take its slot, so they are
// neither checked nor sorted: in a burst, where the key asking is usually
// the oldest waiting one, a decision costs one pass over the namespace
// instead of sorting every waiting key. ok is false when Self is not among
// s.Keys.
func DecideSlot(s Slots) (d SlotDecision, ok bool) {
	var self *keyward.AccessKey
	for _, k := range s.Keys {
		if k.Name == s.Self {
			self = k
			break
		}
	}
	if self == nil {
		return SlotDecision{}, false
	}
	d, ok = allocate(s, self)[s.Self]
	return d, ok
}

// allocate decides for every key, or, when only is set, for the keys that
// rank before it and for it (enough to decide only; the rest are left out).
func allocate(s Slots, only *keyward.AccessKey) map[string]SlotDecision {
	out := make(map[string]SlotDecision, len(s.Keys))
	usedByApp := map[string]int32{}
	usedByOwner := map[string]int32{}
	var usedByTenant int32
	var waiting []*keyward.AccessKey

	for _, k := range s.Keys {
		switch {
		case IsIssued(k) || (s.Holds != nil && s.Holds(k)):
			// Held, even while the key is being deleted: a finalizer may
			// keep it for as long as it likes, and no other key may be
			// valid in its slot meanwhile (docs/limits.md).
			out[k.Name] = SlotDecision{Outcome: SlotHeld}
			usedByApp[k.Spec.Application]++
			usedByOwner[k.Spec.Owner]++
			usedByTenant++
		case !k.DeletionTimestamp.IsZero():
			// Being deleted without a slot: it takes none.
			out[k.Name] = SlotDecision{Outcome: SlotNotCandidate}
		case only != nil && k != only && !olderThan(k, only):
			// Ranks after the key asking: it cannot take that key's slot.
		case !Competes(k, s.Apps[k.Spec.Application], s.Tenant, k.Name == s.Self):
			out[k.Name] = SlotDecision{Outcome: SlotNotCandidate}
		default:
			waiting = append(waiting, k)
		}
	}

	sort.Slice(waiting, func(i, j int) bool { return olderThan(waiting[i], waiting[j]) })
	for _, k := range waiting {
		d := slotFor(k, s.Apps[k.Spec.Application], s.Tenant, usedByApp[k.Spec.Application], usedByOwner[k.Spec.Owner], usedByTenant)
		if d.Outcome == SlotGranted {
			usedByApp[k.Spec.Application]++
			usedByOwner[k.Spec.Owner]++
			usedByTenant++
		}
		out[k.Name] = d
	}
	return out
}

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
