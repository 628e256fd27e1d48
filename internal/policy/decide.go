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
	refusal         *keyward.SecretRefusal // the refusal of the key's Secret that stands, if any
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
	requested, err := RequestedExpiry(k)
	if err == nil && IsIssued(k) {
		keep.expiresAt = EffectiveExpiry(requested, k.Status.LifetimeLimit)
	}
	if ob, blocked := obstacleTo(k, o.App, o.Tenant); blocked {
		keep.phase, keep.reason, keep.message = ob.phase, ob.reason, ob.message
		return keep
	}
	if ImportRequested(k) {
		if msg, waiting := importWait(o); waiting {
			keep.phase, keep.reason, keep.message = keyward.PhasePending, keyward.ReasonImportPending, msg
			return keep
		}
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
		if ImportRequested(k) {
			d.material = MaterialImport
		}
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
		if d.material == MaterialRotate && RenewsLifetime(k) {
			d.lifetimeLimit, d.expiresAt = RenewedLifetime(requested, o.Tenant, o.Now)
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
