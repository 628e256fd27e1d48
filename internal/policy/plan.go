package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// MaxRotationRecord is the longest rotate annotation value kept as it is in
// status.rotation.lastRequest; longer values are kept as their SHA-256.
const MaxRotationRecord = 64

// SecretRetry is how often a key whose Secret name is taken tries again,
// besides every change of its spec (the Secret in its way may not be one
// the manager watches). A Secret refused as invalid waits for a spec change.
const SecretRetry = 30 * time.Second

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

// Event is the Kubernetes Event a plan records once its status is written.
type Event struct {
	Type   string // Normal or Warning
	Reason string // an Event* constant
	// BeforeStatus asks for the Event to be written, at once, before the
	// status that records the transition: nothing else in the API records
	// it, so a manager stopped between the status write and a queued Event
	// must not lose it. A retry after such a stop re-plans the same
	// transition and writes the Event again.
	BeforeStatus bool
	// Actor is the user who caused the transition, as the admission policy
	// stamped it on the key ("" when unknown); the note names them.
	Actor string
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

// EventNote is the note of the plan's Event: the Ready message and the key
// ID, never key material.
func (p *Plan) EventNote() string {
	msg := ""
	if c := p.Ready(); c != nil {
		msg = c.Message
	}
	if p.Status.KeyID != "" {
		msg = fmt.Sprintf("%s (key ID %s)", msg, p.Status.KeyID)
	}
	if p.Event != nil && p.Event.Actor != "" {
		msg = fmt.Sprintf("%s; by %s", msg, UserName(p.Event.Actor))
	}
	return BoundMessage(msg)
}

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

// PlanKey plans one reconcile of a key. The order of the decision matters:
// revocation is final; then what the key depends on (a readable spec, its
// Application, the tenant, the Application's scopes); then the limits for
// keys never issued; then, for issued keys, expiry before state.
func PlanKey(o Observation) Plan {
	d := decide(o)
	return build(o, d)
}

// NeedsSlot reports whether the plan of a key depends on the limits: a
// key never issued that nothing else keeps from being issued. Only for such
// keys does the controller ask for a slot.
func NeedsSlot(o Observation) bool {
	k := o.Key
	if k.Spec.Revoked || IsIssued(k) || !k.DeletionTimestamp.IsZero() || o.Secret == SecretForeign || o.Refusal != nil {
		return false
	}
	if _, standing := standingRefusal(k); standing {
		return false
	}
	if _, waiting := importWait(o); ImportRequested(k) && waiting {
		return false
	}
	if _, err := RequestedExpiry(k); err != nil {
		return false
	}
	app := ApplicationOf(k, o.App)
	return app != nil && o.Tenant.Invalid == "" && o.Tenant.Enabled && CheckScopes(k, app) == nil
}

// FoldRefusal is PlanKey for a reconcile whose Secret write the API server
// refused: the key is Pending with the refusal's reason, no material is
// recorded and a rotation request stays unanswered.
func FoldRefusal(o Observation, r Refusal) Plan {
	o.Refusal = &r
	return PlanKey(o)
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
	if msg, waiting := importWait(o); ImportRequested(k) && waiting {
		return pending(keyward.ReasonImportPending, msg)
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

// refused turns a decision to write material into Pending with the
// refusal's reason; it tries again every SecretRetry and on any spec change.
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
func build(o Observation, d decision) Plan {
	k := o.Key
	st := *k.Status.DeepCopy()
	st.ObservedGeneration = k.Generation
	st.Phase = d.phase

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

// RotationRecord is how a rotate annotation value is kept in
// status.rotation.lastRequest: as it is when short, else as its SHA-256, so
// that a value of any size (annotations may hold 256 KiB) leaves status
// writable. Requests are compared in the same form.
func RotationRecord(v string) string {
	if len(v) <= MaxRotationRecord {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// rotationRequested reports whether the rotate annotation holds a value not yet acted on.
func rotationRequested(k *keyward.AccessKey) bool {
	v, ok := k.Annotations[keyward.RotateAnnotation]
	return ok && v != "" && RotationRecord(v) != rotationRecorded(k)
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

// transitionEvent names the Event to record when a key moves from one
// phase to another with the given material action; "" means none.
func transitionEvent(from keyward.KeyPhase, d decision) string {
	switch d.material {
	case MaterialIssue:
		return keyward.EventIssued
	case MaterialImport:
		return keyward.EventImported
	case MaterialRotate:
		return keyward.EventRotated
	case MaterialReissue:
		return keyward.EventSecretRecreated
	}
	if from == d.phase {
		return ""
	}
	switch d.phase {
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
		switch d.reason {
		case keyward.ReasonApplicationLimitExceeded, keyward.ReasonOwnerLimitExceeded, keyward.ReasonTenantLimitExceeded:
			return keyward.EventLimitExceeded
		}
		return d.reason
	}
	return ""
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
