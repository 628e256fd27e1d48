package policy

import (
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// SecretState is what the controller found at the key's Secret name.
type SecretState int

const (
	// SecretMissing: there is no Secret (or only an emptied one being deleted).
	SecretMissing SecretState = iota
	// SecretIntact: the key's Secret holds the key that status describes.
	SecretIntact
	// SecretTampered: the key's own Secret (it controls it) no longer holds
	// the key status describes; the old plaintext cannot be recovered.
	SecretTampered
	// SecretForeign: a Secret this key does not control has the name (a
	// stranger's, or a look-alike with Keyward's labels and the key ID).
	// It is never used, overwritten or adopted.
	SecretForeign
	// SecretImportable: a key never issued asks for an import, and the
	// Secret holds exactly the material its annotations name, controlled
	// by no other object (docs/backup-restore.md).
	SecretImportable
)

// MaterialAction is what to do with the key material.
type MaterialAction int

const (
	MaterialKeep    MaterialAction = iota // leave it as it is
	MaterialIssue                         // first issue: generate and store
	MaterialReissue                       // the Secret was lost or edited: generate anew, into a new Secret
	MaterialRotate                        // a rotation was requested: generate anew, keep the old one for the grace period
	MaterialDestroy                       // revoked: empty and delete the Secret, forget the hash
	MaterialImport                        // a restored key: adopt the Secret and the material its import annotations name
)

// Writes reports whether the action writes new key material.
func (a MaterialAction) Writes() bool {
	return a == MaterialIssue || a == MaterialReissue || a == MaterialRotate
}

// MaxMessage bounds every condition message (and so every Event note), so
// that no input can make a status too big to write.
const MaxMessage = 1024

// Observation is everything the plan looks at.
type Observation struct {
	Key *keyward.AccessKey
	// App is the Application now under the key's spec.application name
	// (nil when none); ApplicationOf decides whether it is the key's.
	App    *keyward.Application
	Tenant Tenant
	// Slot is the limits' outcome for a key never issued (see NeedsSlot).
	Slot   SlotDecision
	Secret SecretState
	// Refusal is set when the API server refused the key's Secret.
	Refusal *Refusal
	// ImportHeldBy names ("namespace/name") another AccessKey whose status
	// records the key ID a key's import asks for; "" when none.
	ImportHeldBy string
	Now          time.Time
	// MaxRequeue caps the wake-up so that a lost timer heals.
	MaxRequeue time.Duration
}

// Plan is everything one reconcile of a key does: the material action, the
// complete status to write (with the Ready condition), the Event to record
// and when to look again.
type Plan struct {
	Material MaterialAction
	Status   keyward.AccessKeyStatus
	Event    *Event
	// RequeueAfter is when the plan can change by the clock alone.
	RequeueAfter time.Duration
}

// Ready returns the plan's Ready condition.
func (p *Plan) Ready() *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, keyward.ConditionReady)
}

// RecordMaterial records in the planned status the material the controller
// wrote: its public ID and the hash of its secret part.
func (p *Plan) RecordMaterial(keyID, secretHash string) {
	p.Status.KeyID, p.Status.ShortKeyID, p.Status.SecretHash = keyID, shortID(keyID), secretHash
}

// PlanKey plans one reconcile of a key. The order of the decision matters:
// revocation is final; then what the key depends on (a readable spec, its
// Application, the tenant, the Application's scopes); then the limits for
// keys never issued; then, for issued keys, expiry before state.
func PlanKey(o Observation) Plan {
	d := decide(o)
	return build(o, d)
}

// build turns a decision into the complete status, Event and wake-up.
func build(o Observation, d decision) Plan {
	k := o.Key
	st := *k.Status.DeepCopy()
	st.ObservedGeneration = k.Generation
	st.Phase = d.phase
	st.SecretRefusal = d.refusal

	previous := PreviousKeyAfter(k, false, o.Now) // drops it when its grace period is over
	switch d.material {
	case MaterialIssue:
		st.IssuedAt = &metav1.Time{Time: o.Now}
		st.SecretName = k.SecretName()
	case MaterialImport:
		// The material the annotations name, which the Secret holds.
		st.IssuedAt = &metav1.Time{Time: o.Now}
		st.SecretName = k.SecretName()
		id := k.Annotations[keyward.ImportKeyIDAnnotation]
		st.KeyID, st.ShortKeyID, st.SecretHash = id, shortID(id), k.Annotations[keyward.ImportSecretHashAnnotation]
	case MaterialReissue:
		st.SecretName = k.SecretName()
	case MaterialRotate:
		st.LastRotatedAt = &metav1.Time{Time: o.Now}
		st.SecretName = k.SecretName()
		previous = RotatedOutKey(k, o.Tenant, o.Now)
	case MaterialDestroy:
		st.SecretHash, st.SecretName, previous = "", "", nil
	}
	if k.Spec.Revoked && k.Status.SecretHash == "" {
		previous = nil
	}
	st.PreviousKey = previous
	if st.IssuedAt != nil {
		st.LifetimeLimit, st.ExpiresAt = d.lifetimeLimit, d.expiresAt
	} else {
		st.LifetimeLimit, st.ExpiresAt = nil, nil
	}
	if d.rotationRequest != "" {
		st.Rotation = &keyward.RotationStatus{LastRequest: d.rotationRequest}
	}

	// Ready (True once the key is where its spec asks: Active, Inactive,
	// Expired, Revoked), plus Reconciling or Stalled while it is not, as
	// kstatus reads them (conditions.go).
	SetConditions(&st.Conditions, k.Generation, KeyOutcome(d.phase, d.reason), d.reason, BoundMessage(d.message), o.Now)
	SetScopeNames(&st.Conditions, k.Generation, k.Spec.Scopes, o.Now)

	p := Plan{Material: d.material, Status: st}
	if reason := transitionEvent(k.Status.Phase, d); reason != "" {
		p.Event = &Event{Type: corev1.EventTypeNormal, Reason: reason}
		if d.phase == keyward.PhaseRejected || reason == keyward.EventSecretRecreated {
			p.Event.Type = corev1.EventTypeWarning
		}
		// A re-issue nobody asked for leaves no trace in status (a
		// rotation leaves status.rotation, an issue status.issuedAt).
		p.Event.BeforeStatus = reason == keyward.EventSecretRecreated
		p.Event.Actor = Actor(k, reason)
	}
	wake := d.wakeAt
	if d.phase == keyward.PhasePending && (d.reason == keyward.ReasonSecretNameConflict || d.reason == keyward.ReasonImportPending) {
		// The name may be freed by a Secret this manager does not watch;
		// a key the import waits for may be deleted elsewhere.
		retry := metav1.NewTime(o.Now.Add(SecretRetry))
		wake = []*metav1.Time{&retry}
	}
	p.RequeueAfter = NextWake(o.Now, o.MaxRequeue, wake...)
	return p
}

// MinimalStatus is the status written when the API server refuses the
// planned one: the phase and the Ready condition with its reason, plus the
// record of the key material and of the rotation acted on, so that a
// written Secret is never forgotten nor a rotation repeated.
func MinimalStatus(p Plan, k *keyward.AccessKey) keyward.AccessKeyStatus {
	c := p.Ready()
	st := keyward.AccessKeyStatus{
		ObservedGeneration: k.Generation, Phase: p.Status.Phase,
		KeyID: p.Status.KeyID, ShortKeyID: p.Status.ShortKeyID, SecretName: p.Status.SecretName,
		SecretHash: p.Status.SecretHash, IssuedAt: p.Status.IssuedAt,
		// The rotation request acted on (at most 71 characters) is kept
		// too: without it the same request would be acted on again.
		Rotation: p.Status.Rotation, LastRotatedAt: p.Status.LastRotatedAt,
		SecretRefusal: p.Status.SecretRefusal,
	}
	if c != nil {
		// Ready, and Reconciling or Stalled, as planned.
		for _, pc := range p.Status.Conditions {
			pc.Message = BoundMessage("the full status could not be written; " + pc.Message)
			st.Conditions = append(st.Conditions, pc)
		}
	}
	return st
}

// BoundMessage cuts a condition message to MaxMessage bytes on a rune
// boundary.
func BoundMessage(s string) string {
	if len(s) <= MaxMessage {
		return s
	}
	cut := MaxMessage - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
