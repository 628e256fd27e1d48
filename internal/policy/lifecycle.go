package policy

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SecretState is what the controller found in the key's Secret.
type SecretState int

const (
	// SecretIntact: the Secret holds the key that status describes.
	SecretIntact SecretState = iota
	// SecretMissing: there is no Secret.
	SecretMissing
	// SecretTampered: the Secret exists but its key data is not the key
	// status describes; the old plaintext cannot be recovered.
	SecretTampered
)

// MaterialAction is what to do with the key material.
type MaterialAction int

const (
	MaterialKeep    MaterialAction = iota // leave it as it is
	MaterialIssue                         // first issue: generate and store
	MaterialReissue                       // the Secret was lost or edited: generate anew
	MaterialRotate                        // a rotation was requested: generate anew, keep the old one for the grace period
	MaterialDestroy                       // revoked: delete the Secret and forget the hash
)

// Observation is everything the lifecycle decision looks at.
type Observation struct {
	Key    *keyward.AccessKey
	App    *keyward.Application // nil when missing
	Tenant Tenant
	Slot   SlotDecision
	Secret SecretState
	Now    time.Time
}

// Decision is the lifecycle outcome for one key.
type Decision struct {
	Phase    keyward.KeyPhase
	Reason   string
	Message  string
	Material MaterialAction
	// LifetimeLimit and ExpiresAt are what status should record.
	LifetimeLimit *metav1.Time
	ExpiresAt     *metav1.Time
	// RotationRequest is the rotate annotation value acted on (or recorded at issue).
	RotationRequest string
	// WakeAt lists the moments at which the decision may change.
	WakeAt []*metav1.Time
}

// Decide computes phase, reason and material action for one key. Order
// matters: revocation is final; then what the key depends on (its
// Application, the tenant switch, the Application's scopes); then the limits
// for keys never issued; then, for issued keys, expiry before state.
func Decide(o Observation) Decision {
	k := o.Key
	if k.Spec.Revoked {
		d := Decision{Phase: keyward.PhaseRevoked, Reason: keyward.ReasonRevoked,
			Message: "the key was revoked and its key material destroyed; revocation is irreversible"}
		if k.Status.SecretHash != "" || o.Secret != SecretMissing || k.Status.PreviousKey != nil {
			d.Material = MaterialDestroy
		}
		d.ExpiresAt = k.Status.ExpiresAt
		d.LifetimeLimit = k.Status.LifetimeLimit
		return d
	}
	keep := Decision{LifetimeLimit: k.Status.LifetimeLimit, ExpiresAt: k.Status.ExpiresAt}
	requested, err := RequestedExpiry(k)
	if err != nil {
		// Fail closed: an expiry nobody can read could be in the past.
		keep.Phase, keep.Reason = keyward.PhasePending, keyward.ReasonInvalidSpec
		keep.Message = err.Error() + "; the key does not verify until it is fixed, and its key material is kept"
		return keep
	}
	if IsIssued(k) {
		keep.ExpiresAt = EffectiveExpiry(requested, k.Status.LifetimeLimit)
	}
	if o.App == nil {
		keep.Phase, keep.Reason = keyward.PhasePending, keyward.ReasonApplicationNotFound
		keep.Message = fmt.Sprintf("application %q does not exist in this namespace", k.Spec.Application)
		return keep
	}
	if o.Tenant.Invalid != "" {
		keep.Phase, keep.Reason = keyward.PhasePending, keyward.ReasonInvalidTenantSettings
		keep.Message = "TenantSettings \"default\": " + o.Tenant.Invalid + "; no key is issued or verifies in this tenant until it is fixed"
		return keep
	}
	if !o.Tenant.Enabled {
		keep.Phase, keep.Reason = keyward.PhasePending, keyward.ReasonAPIKeysDisabled
		keep.Message = "API keys are switched off for this tenant (TenantSettings \"default\", spec.apiKeysEnabled); existing key material is kept"
		return keep
	}
	if err := CheckScopes(k, o.App); err != nil {
		keep.Phase, keep.Reason = keyward.PhaseRejected, keyward.ReasonScopeNotAllowed
		keep.Message = err.Error()
		return keep
	}

	d := keep
	d.RotationRequest = rotationRecorded(k)
	if !IsIssued(k) {
		switch o.Slot.Outcome {
		case SlotDenied:
			d.Phase, d.Reason, d.Message = keyward.PhaseRejected, o.Slot.Reason, o.Slot.Message
			return d
		case SlotSettling:
			d.Phase, d.Reason = keyward.PhasePending, keyward.ReasonSettling
			d.Message = "waiting for keys created in the same second to be observed, so the oldest take the free slots"
			settled := metav1.NewTime(o.Slot.SettledAt)
			d.WakeAt = []*metav1.Time{&settled}
			return d
		case SlotGranted:
		default:
			// Not a candidate for reasons handled above; be safe and wait.
			d.Phase, d.Reason, d.Message = keyward.PhasePending, keyward.ReasonSettling, "waiting for a slot"
			return d
		}
		d.Material = MaterialIssue
		d.LifetimeLimit = LifetimeLimit(o.Now, o.Tenant)
		d.ExpiresAt = EffectiveExpiry(requested, d.LifetimeLimit)
		d.RotationRequest = k.Annotations[keyward.RotateAnnotation]
	} else {
		switch {
		case rotationRequested(k):
			d.Material = MaterialRotate
			d.RotationRequest = k.Annotations[keyward.RotateAnnotation]
		case o.Secret != SecretIntact:
			d.Material = MaterialReissue
		}
	}

	switch {
	case IsExpired(d.ExpiresAt, o.Now):
		d.Phase, d.Reason = keyward.PhaseExpired, keyward.ReasonExpired
		d.Message = fmt.Sprintf("the key expired at %s; move spec.expiresAt into the future to restore it", d.ExpiresAt.UTC().Format(time.RFC3339))
	case k.Spec.State == keyward.StateInactive:
		d.Phase, d.Reason = keyward.PhaseInactive, keyward.ReasonInactive
		d.Message = "the key is deactivated (spec.state: Inactive); set it to Active to restore the same key"
	default:
		d.Phase, d.Reason, d.Message = keyward.PhaseActive, keyward.ReasonIssued, "the key is issued and verifies"
	}
	d.WakeAt = append(d.WakeAt, d.ExpiresAt)
	if pk := k.Status.PreviousKey; pk != nil {
		d.WakeAt = append(d.WakeAt, &pk.ValidUntil)
	}
	return d
}

// rotationRequested reports whether the rotate annotation holds a value not yet acted on.
func rotationRequested(k *keyward.AccessKey) bool {
	v, ok := k.Annotations[keyward.RotateAnnotation]
	return ok && v != "" && v != rotationRecorded(k)
}

func rotationRecorded(k *keyward.AccessKey) string {
	if k.Status.Rotation == nil {
		return ""
	}
	return k.Status.Rotation.LastRequest
}

// GracePeriod is how long a rotated-out key keeps verifying.
// An unusable or too long value is cut to what the API allows (fail
// closed: an unreadable grace period is none).
func GracePeriod(k *keyward.AccessKey) time.Duration {
	if k.Spec.Rotation == nil || k.Spec.Rotation.GracePeriod == nil {
		return 0
	}
	d, err := k.Spec.Rotation.GracePeriod.Parse()
	if err != nil {
		return 0
	}
	return min(d, keyward.MaxGracePeriod)
}

// RequestedExpiry is spec.expiresAt as a time, nil for never, or an error
// naming the field when it cannot be used.
func RequestedExpiry(k *keyward.AccessKey) (*metav1.Time, error) {
	if k.Spec.ExpiresAt == nil {
		return nil, nil
	}
	t, err := k.Spec.ExpiresAt.Parse()
	if err != nil {
		return nil, fmt.Errorf("spec.expiresAt is %w", err)
	}
	return &metav1.Time{Time: t}, nil
}

// PreviousKeyAfter returns status.previousKey as it should be at now: a
// rotation with a grace period keeps the outgoing key until it ends; an
// ended grace period drops it. The previous key never outlives the key
// itself: its validUntil is cut to the key's effective expiry (which the
// tenant's lifetime limit already bounds).
func PreviousKeyAfter(k *keyward.AccessKey, rotated bool, now time.Time) *keyward.PreviousKey {
	var pk *keyward.PreviousKey
	if rotated {
		grace := GracePeriod(k)
		if grace == 0 || k.Status.KeyID == "" || k.Status.SecretHash == "" {
			return nil
		}
		pk = &keyward.PreviousKey{KeyID: k.Status.KeyID, SecretHash: k.Status.SecretHash, ValidUntil: metav1.NewTime(now.Add(grace))}
	} else if k.Status.PreviousKey != nil {
		pk = k.Status.PreviousKey.DeepCopy()
	} else {
		return nil
	}
	requested, err := RequestedExpiry(k)
	if err != nil {
		return nil // fail closed
	}
	if expiry := EffectiveExpiry(requested, k.Status.LifetimeLimit); expiry != nil && expiry.Before(&pk.ValidUntil) {
		pk.ValidUntil = *expiry.DeepCopy()
	}
	if !now.Before(pk.ValidUntil.Time) {
		return nil
	}
	return pk
}

// TransitionEvent names the Event to record when a key moves from one
// phase to another with the given material action; "" means none.
func TransitionEvent(from keyward.KeyPhase, d Decision) string {
	switch d.Material {
	case MaterialIssue:
		return keyward.EventIssued
	case MaterialRotate:
		return keyward.EventRotated
	case MaterialReissue:
		return keyward.EventSecretRecreated
	}
	if from == d.Phase {
		return ""
	}
	switch d.Phase {
	case keyward.PhaseActive:
		if from != "" {
			return keyward.EventReactivated
		}
	case keyward.PhaseInactive:
		return keyward.EventDeactivated
	case keyward.PhaseExpired:
		return keyward.EventExpired
	case keyward.PhaseRevoked:
		return keyward.EventRevoked
	case keyward.PhaseRejected:
		switch d.Reason {
		case keyward.ReasonApplicationLimitExceeded, keyward.ReasonOwnerLimitExceeded, keyward.ReasonTenantLimitExceeded:
			return keyward.EventLimitExceeded
		}
		return d.Reason
	}
	return ""
}
