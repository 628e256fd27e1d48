package policy

import (
	"fmt"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// obstacle is what keeps a key, revocation aside, from being issued or
// verifying whatever the limits say: the phase, reason and message its
// status shows for it.
type obstacle struct {
	phase           keyward.KeyPhase
	reason, message string
}

// obstacleTo returns the first rule that keeps k from being issued or
// verifying now, in the order its status reports them: an expiry nobody can
// read, its Application missing or replaced, the tenant switched off or
// unusable, scopes beyond its Application's. app is the Application now
// under k's spec.application name (nil when none). ok is false when nothing
// is in the way.
//
// It is the one rule of eligibility: the plan (decide) reports it, and the
// limits (Competes) let only keys with no obstacle compete for a slot.
func obstacleTo(k *keyward.AccessKey, app *keyward.Application, t Tenant) (obstacle, bool) {
	pending := func(reason, message string) (obstacle, bool) {
		return obstacle{phase: keyward.PhasePending, reason: reason, message: message}, true
	}
	if _, err := RequestedExpiry(k); err != nil {
		// Fail closed: an expiry nobody can read could be in the past.
		return pending(keyward.ReasonInvalidSpec, err.Error()+"; the key does not verify until it is fixed, and its key material is kept")
	}
	own := ApplicationOf(k, app)
	if own == nil {
		if ApplicationReplaced(k, app) {
			return pending(keyward.ReasonApplicationNotFound, fmt.Sprintf(
				"application %q was deleted and created again; this key belonged to the deleted one and is deleted with it by the garbage collector (it never takes on the new application's group, scopes or limits)", k.Spec.Application))
		}
		return pending(keyward.ReasonApplicationNotFound, fmt.Sprintf("application %q does not exist in this namespace", k.Spec.Application))
	}
	if b, blocked := t.Blocked(); blocked {
		return pending(b.Reason, b.KeyMessage())
	}
	if err := CheckScopes(k, own); err != nil {
		return obstacle{phase: keyward.PhaseRejected, reason: keyward.ReasonScopeNotAllowed, message: err.Error()}, true
	}
	return obstacle{}, false
}

// Competes reports whether k waits for a slot: it was never issued, is
// neither being deleted nor revoked, nothing is in its way (obstacleTo),
// and no refusal of its Secret stands for its current spec. A key refused
// for a taken Secret name competes again when it asks itself (asking is its
// retry; the controller first checks that the name is free).
func Competes(k *keyward.AccessKey, app *keyward.Application, t Tenant, asking bool) bool {
	if IsIssued(k) || !k.DeletionTimestamp.IsZero() || k.Spec.Revoked {
		return false
	}
	if r, refused := RefusalOf(k); refused && (!asking || r.Reason != keyward.ReasonSecretNameConflict) {
		return false
	}
	_, blocked := obstacleTo(k, app, t)
	return !blocked
}

// NeedsSlot reports whether the plan of a key depends on the limits: a key
// that competes (Competes, asking itself) and whose Secret name is not
// found taken or refused in this reconcile. Only for such keys does the
// controller ask for a slot; a key whose import waits (importWait) does
// not ask until it can be taken.
func NeedsSlot(o Observation) bool {
	if !Competes(o.Key, o.App, o.Tenant, true) || o.Secret == SecretForeign || o.Refusal != nil {
		return false
	}
	if ImportRequested(o.Key) {
		// A restored key asks for a slot once its import can be taken.
		_, waiting := importWait(o)
		return !waiting
	}
	return true
}
