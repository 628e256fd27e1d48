package policy

import (
	"sort"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// The allocation as one pass over a namespace: the reference model the
// SlotBook is tested against (slotbook_test.go, fuzz_test.go). The manager
// decides with the SlotBook; this is the rule written plainly.

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
