package policy

import (
	"fmt"
	"regexp"
	"strings"
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
}

// FoldRefusal is PlanKey for a reconcile whose Secret write the API server
// refused: the key is Pending with the refusal's reason, no material is
// recorded and a rotation request stays unanswered.
func FoldRefusal(o Observation, r Refusal) Plan {
	o.Refusal = &r
	return PlanKey(o)
}

// refused turns a decision to write material into Pending with the
// refusal's reason; it tries again every SecretRetry and on any spec change.
func refused(d decision, k *keyward.AccessKey, r Refusal) decision {
	d.phase, d.reason, d.material = keyward.PhasePending, r.Reason, MaterialKeep
	d.refusal = &keyward.SecretRefusal{Reason: r.Reason, Fields: r.Fields, Generation: k.Generation}
	if r.Reason == keyward.ReasonSecretNameConflict {
		d.message = fmt.Sprintf("a Secret named %q that this key does not control already exists (or the key's previous Secret is still being deleted); delete it or set spec.secretTemplate.name", k.SecretName())
	} else {
		d.message = "the API server refused the key's Secret; fix " + fieldList(r.Fields) + " (labels must be valid Kubernetes labels, annotations at most 256 KiB together)"
	}
	d.wakeAt = nil // build sets the retry
	return d
}

// fieldList names the spec fields to fix in a message.
func fieldList(fields []string) string {
	if len(fields) == 0 {
		return "spec.secretTemplate"
	}
	return fmt.Sprint(fields)
}

// FoldMetadataRefusal notes in a plan that the API server refused the
// labels or annotations of the key's intact Secret: the key still works,
// but the Secret's metadata is stale until the named fields are fixed.
func FoldMetadataRefusal(p Plan, fields []string) Plan {
	p.Status = *p.Status.DeepCopy()
	c := p.Ready()
	c.Message = BoundMessage(c.Message + "; the API server refused the Secret's labels or annotations, fix " + fieldList(fields))
	return p
}

// RefusalOf returns the refusal of the key's Secret that stands for its
// current spec, as status.secretRefusal records it. Such a key is Pending
// and, like every Pending key, holds no slot (docs/limits.md); a change of
// its spec (or, for a taken name, its retry timer) brings it back.
//
// A status written before that field existed records a refusal only as the
// reason of its Ready condition: it is read from there (once: the plan's
// status then carries the field).
func RefusalOf(k *keyward.AccessKey) (Refusal, bool) {
	if r := k.Status.SecretRefusal; r != nil {
		if r.Generation != k.Generation {
			return Refusal{}, false
		}
		return Refusal{Reason: r.Reason, Fields: r.Fields}, true
	}
	c := meta.FindStatusCondition(k.Status.Conditions, keyward.ConditionReady)
	if k.Status.Phase != keyward.PhasePending || c == nil || k.Status.ObservedGeneration != k.Generation {
		return Refusal{}, false
	}
	switch c.Reason {
	case keyward.ReasonSecretNameConflict:
		return Refusal{Reason: c.Reason}, true
	case keyward.ReasonSecretInvalid:
		return Refusal{Reason: c.Reason, Fields: legacyFields(c.Message)}, true
	}
	return Refusal{}, false
}

// legacyFields reads back the spec fields an older status named in its
// message ("fix [spec.secretTemplate.labels ...]").
var legacyFieldsPattern = regexp.MustCompile(`fix \[([^\]]*)\]`)

func legacyFields(message string) []string {
	m := legacyFieldsPattern.FindStringSubmatch(message)
	if m == nil {
		return nil
	}
	return strings.Fields(m[1])
}

// Refused reports whether a refusal of the key's Secret stands for its
// current spec (RefusalOf).
func Refused(k *keyward.AccessKey) bool {
	_, ok := RefusalOf(k)
	return ok
}

// RefusedForName reports whether the key waits, for its current spec,
// for a Secret name that was taken: it may proceed only once the name is
// free, which the controller checks before the key competes for a slot.
func RefusedForName(k *keyward.AccessKey) bool {
	r, ok := RefusalOf(k)
	return ok && r.Reason == keyward.ReasonSecretNameConflict
}

// standingRefusal returns the refusal of the key's Secret as invalid that
// stands for its current spec: only a change of the spec can cure that, so
// the write is not tried again.
func standingRefusal(k *keyward.AccessKey) (Refusal, bool) {
	r, ok := RefusalOf(k)
	return r, ok && r.Reason == keyward.ReasonSecretInvalid
}
