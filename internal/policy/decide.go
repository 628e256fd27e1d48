package policy

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// decision is the lifecycle outcome PlanKey turns into a status.
type decision struct {
	phase           keyward.KeyPhase
	reason, message string
	material        MaterialAction
	lifetimeLimit   *metav1.Time
	expiresAt       *metav1.Time
	rotationRequest string // the rotate annotation value acted on (or recorded at issue)
	wakeAt          []*metav1.Time
}

func decide(o Observation) decision {
	k := o.Key
	if k.Spec.Revoked {
		d := decision{phase: keyward.PhaseRevoked, reason: keyward.ReasonRevoked,
			message:       "the key was revoked and its key material destroyed; revocation is irreversible",
			lifetimeLimit: k.Status.LifetimeLimit, expiresAt: k.Status.ExpiresAt}
		if k.Status.SecretHash != "" || k.Status.PreviousKey != nil || o.Secret == SecretIntact || o.Secret == SecretTampered {
			d.material = MaterialDestroy
		}
		return d
	}
	keep := decision{lifetimeLimit: k.Status.LifetimeLimit, expiresAt: k.Status.ExpiresAt}
	pending := func(reason, message string) decision {
		keep.phase, keep.reason, keep.message = keyward.PhasePending, reason, message
		return keep
	}
	requested, err := RequestedExpiry(k)
	if err != nil {
		// Fail closed: an expiry nobody can read could be in the past.
		return pending(keyward.ReasonInvalidSpec, err.Error()+"; the key does not verify until it is fixed, and its key material is kept")
	}
	if IsIssued(k) {
		keep.expiresAt = EffectiveExpiry(requested, k.Status.LifetimeLimit)
	}
	app := ApplicationOf(k, o.App)
	switch {
	case app == nil && ApplicationReplaced(k, o.App):
		return pending(keyward.ReasonApplicationNotFound, fmt.Sprintf(
			"application %q was deleted and created again; this key belonged to the deleted one and is deleted with it by the garbage collector (it never takes on the new application's group, scopes or limits)", k.Spec.Application))
	case app == nil:
		return pending(keyward.ReasonApplicationNotFound, fmt.Sprintf("application %q does not exist in this namespace", k.Spec.Application))
	case o.Tenant.Invalid != "":
		return pending(keyward.ReasonInvalidTenantSettings, "TenantSettings \"default\": "+o.Tenant.Invalid+"; no key is issued or verifies in this tenant until it is fixed")
	case !o.Tenant.Enabled:
		return pending(keyward.ReasonAPIKeysDisabled, "API keys are switched off for this tenant (TenantSettings \"default\", spec.apiKeysEnabled); existing key material is kept")
	}
	if err := CheckScopes(k, app); err != nil {
		keep.phase, keep.reason, keep.message = keyward.PhaseRejected, keyward.ReasonScopeNotAllowed, err.Error()
		return keep
	}
	if o.Secret == SecretForeign && o.Refusal == nil {
		o.Refusal = &Refusal{Reason: keyward.ReasonSecretNameConflict}
	}
	if r, ok := standingRefusal(k); ok && o.Refusal == nil {
		o.Refusal = &r
	}

	d := keep
	d.rotationRequest = rotationRecorded(k)
	if !IsIssued(k) {
		if o.Refusal != nil {
			return refused(d, k, *o.Refusal)
		}
		if o.Slot.Outcome != SlotGranted {
			d.phase, d.reason, d.message = keyward.PhaseRejected, o.Slot.Reason, o.Slot.Message
			if d.reason == "" { // not reached: the controller asks for a slot whenever NeedsSlot
				d.reason, d.message = keyward.ReasonApplicationLimitExceeded, "no slot is free for the key yet"
			}
			return d
		}
		d.material = MaterialIssue
		d.lifetimeLimit = LifetimeLimit(o.Now, o.Tenant)
		d.expiresAt = EffectiveExpiry(requested, d.lifetimeLimit)
		d.rotationRequest = RotationRecord(k.Annotations[keyward.RotateAnnotation])
	} else {
		switch {
		case rotationRequested(k):
			d.material = MaterialRotate
			d.rotationRequest = RotationRecord(k.Annotations[keyward.RotateAnnotation])
		case o.Secret != SecretIntact:
			d.material = MaterialReissue
		}
		if d.material != MaterialKeep && o.Refusal != nil {
			d.rotationRequest = rotationRecorded(k) // the request stays unanswered
			return refused(d, k, *o.Refusal)
		}
	}

	switch {
	case IsExpired(d.expiresAt, o.Now):
		d.phase, d.reason = keyward.PhaseExpired, keyward.ReasonExpired
		d.message = fmt.Sprintf("the key expired at %s; move spec.expiresAt into the future to restore it", d.expiresAt.UTC().Format(time.RFC3339))
	case k.Spec.State == keyward.StateInactive:
		d.phase, d.reason = keyward.PhaseInactive, keyward.ReasonInactive
		d.message = "the key is deactivated (spec.state: Inactive); set it to Active to restore the same key"
	default:
		d.phase, d.reason, d.message = keyward.PhaseActive, keyward.ReasonIssued, "the key is issued and verifies"
	}
	d.wakeAt = append(d.wakeAt, d.expiresAt)
	if pk := k.Status.PreviousKey; pk != nil {
		d.wakeAt = append(d.wakeAt, &pk.ValidUntil)
	}
	return d
}

// refused turns a decision to write material into Pending with the
// refusal's reason; it tries again every SecretRetry and on any spec change.
