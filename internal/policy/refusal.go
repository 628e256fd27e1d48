package policy

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SecretRetry is how often a key whose Secret name is taken tries again,
// besides every change of its spec (the Secret in its way may not be one
// the manager watches). A Secret refused as invalid waits for a spec change.
const SecretRetry = 30 * time.Second

// Refusal is a Secret write the API server refused for a reason only the
// user can fix.
type Refusal struct {
	// Reason is ReasonSecretNameConflict or ReasonSecretInvalid.
	Reason string
	// Fields names the spec fields to fix (for SecretInvalid).
	Fields []string
	// standing is the message of a refusal status already records.
	standing string
}

// FoldRefusal is PlanKey for a reconcile whose Secret write the API server
// refused: the key is Pending with the refusal's reason, no material is
// recorded and a rotation request stays unanswered.
func FoldRefusal(o Observation, r Refusal) Plan {
	o.Refusal = &r
	return PlanKey(o)
}

func refused(d decision, k *keyward.AccessKey, r Refusal) decision {
	d.phase, d.reason, d.material = keyward.PhasePending, r.Reason, MaterialKeep
	switch {
	case r.standing != "":
		d.message = r.standing
	case r.Reason == keyward.ReasonSecretNameConflict:
		d.message = fmt.Sprintf("a Secret named %q that this key does not control already exists (or the key's previous Secret is still being deleted); delete it or set spec.secretTemplate.name", k.SecretName())
	default:
		fields := "spec.secretTemplate"
		if len(r.Fields) > 0 {
			fields = fmt.Sprint(r.Fields)
		}
		d.message = "the API server refused the key's Secret; fix " + fields + " (labels must be valid Kubernetes labels, annotations at most 256 KiB together)"
	}
	d.wakeAt = nil // build sets the retry
	return d
}

// build turns a decision into the complete status, Event and wake-up.

// FoldMetadataRefusal notes in a plan that the API server refused the
// labels or annotations of the key's intact Secret: the key still works,
// but the Secret's metadata is stale until the named fields are fixed.
func FoldMetadataRefusal(p Plan, fields []string) Plan {
	p.Status = *p.Status.DeepCopy()
	c := p.Ready()
	f := "spec.secretTemplate"
	if len(fields) > 0 {
		f = fmt.Sprint(fields)
	}
	c.Message = BoundMessage(c.Message + "; the API server refused the Secret's labels or annotations, fix " + f)
	return p
}

// RefusedForName reports whether the key waits, for its current spec,
// for a Secret name that was taken: it may proceed only once the name is
// free, which the controller checks before the key competes for a slot.
func RefusedForName(k *keyward.AccessKey) bool {
	return Refused(k) && meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady).Reason == keyward.ReasonSecretNameConflict
}

// standingRefusal returns the refusal the key's status records when the
// API server refused its Secret as invalid for its current spec: only a
// change of the spec can cure that, so the write is not tried again.
func standingRefusal(k *keyward.AccessKey) (Refusal, bool) {
	c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady)
	if !Refused(k) || c.Reason != keyward.ReasonSecretInvalid {
		return Refusal{}, false
	}
	return Refusal{Reason: keyward.ReasonSecretInvalid, standing: c.Message}, true
}

func isRefusal(reason string) bool {
	return reason == keyward.ReasonSecretNameConflict || reason == keyward.ReasonSecretInvalid
}

// Refused reports whether the key's status says the API server refused its
// Secret for the key's current spec. Such a key is Pending and, like every
// Pending key, holds no slot (docs/limits.md); a change of its spec or its retry
// timer brings it back.
func Refused(k *keyward.AccessKey) bool {
	c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady)
	return k.Status.Phase == keyward.PhasePending && c != nil && isRefusal(c.Reason) &&
		k.Status.ObservedGeneration == k.Generation
}
