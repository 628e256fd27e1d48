package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// AccessKeyReconciler drives one AccessKey through its lifecycle: it decides
// the phase (internal/policy), issues, rotates, re-issues or destroys the key
// material in the key's Secret, and reports status and Events.
type AccessKeyReconciler struct {
	client.Client
	// APIReader reads Secrets the label-filtered cache cannot see.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys/finalizers,verbs=update
// +kubebuilder:rbac:groups=keyward.dev,resources=applications,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=tenantsettings,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

func (r *AccessKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// Fetch the key and everything its decision depends on.
	var key keyward.AccessKey
	if err := r.Get(ctx, req.NamespacedName, &key); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !key.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the garbage collector removes its Secret
	}
	app, err := application(ctx, r.Client, key.Namespace, key.Spec.Application)
	if err != nil {
		return ctrl.Result{}, err
	}
	tenant, err := tenantPolicy(ctx, r.Client, key.Namespace, r.Options.APIKeysEnabledByDefault)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	slot, err := r.slot(ctx, r.Client, &key, tenant, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	secret, err := r.secretFrom(ctx, r.Client, &key)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Compute.
	decision := policy.Decide(policy.Observation{
		Key: &key, App: app, Tenant: tenant, Slot: slot, Secret: secrets.Inspect(secret, &key), Now: now,
	})

	// Material writes cannot be taken back, so they act only on a fresh view:
	// the cache may lag behind our own last write of the key or its Secret,
	// and acting on that would issue material twice. A first issue also
	// ranks the key against a live list of its namespace's keys, so that no
	// key the cache has not seen yet can lose its slot to a younger one.
	if writesMaterial(decision.Material) {
		var fresh keyward.AccessKey
		if err := r.APIReader.Get(ctx, req.NamespacedName, &fresh); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if fresh.ResourceVersion != key.ResourceVersion {
			return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil
		}
		if secret, err = r.secretFrom(ctx, r.APIReader, &key); err != nil {
			return ctrl.Result{}, err
		}
		if decision.Material == policy.MaterialIssue {
			if slot, err = r.slot(ctx, r.APIReader, &key, tenant, now); err != nil {
				return ctrl.Result{}, err
			}
		}
		decision = policy.Decide(policy.Observation{
			Key: &key, App: app, Tenant: tenant, Slot: slot, Secret: secrets.Inspect(secret, &key), Now: now,
		})
	}

	// Act, then report.
	orig := key.DeepCopy()
	if err := r.act(ctx, &key, secret, &decision, now); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.report(ctx, orig, &key, decision); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil // someone wrote first: look again
		}
		return ctrl.Result{}, client.IgnoreNotFound(err) // deleted meanwhile: its Secret goes with it
	}

	// When to come back: the earliest moment the decision can change by
	// the clock alone, capped so a lost timer heals.
	return ctrl.Result{RequeueAfter: policy.NextWake(now, r.Options.MaxRequeue, decision.WakeAt...)}, nil
}

// act carries out the decision's material action on the key's Secret and
// records in key.Status what it did. A Secret the API server refuses turns
// the decision into Pending with a reason (SecretNameConflict when the name
// belongs to a Secret Keyward did not generate, SecretInvalid when the
// template's labels or annotations are not valid); the rotation request, if
// any, then stays unanswered.
func (r *AccessKeyReconciler) act(ctx context.Context, key *keyward.AccessKey, secret *corev1.Secret, decision *policy.Decision, now time.Time) error {
	status := &key.Status
	previous := policy.PreviousKeyAfter(key, false, now) // drops it when its grace period is over
	switch decision.Material {
	case policy.MaterialIssue, policy.MaterialReissue, policy.MaterialRotate:
		outgoing := policy.PreviousKeyAfter(key, true, now)
		material, err := r.writeMaterial(ctx, key, secret)
		if refused, reason, message := secretRefused(err, key); refused {
			decision.Phase, decision.Reason, decision.Message = keyward.PhasePending, reason, message
			decision.Material, decision.RotationRequest = policy.MaterialKeep, ""
			break
		}
		if err != nil {
			return err
		}
		status.KeyID, status.ShortKeyID = material.ID, shortID(material.ID)
		status.SecretHash = keyformat.HashSecret(material.Secret)
		status.SecretName = key.SecretName()
		switch decision.Material {
		case policy.MaterialIssue:
			status.IssuedAt = &metav1.Time{Time: now}
		case policy.MaterialRotate:
			status.LastRotatedAt = &metav1.Time{Time: now}
			previous = outgoing
		}
	case policy.MaterialDestroy:
		if err := r.destroyMaterial(ctx, key, secret); err != nil {
			return err
		}
		status.SecretHash, status.SecretName, previous = "", "", nil
	case policy.MaterialKeep:
		err := r.syncSecretMetadata(ctx, key, secret)
		if apierrors.IsInvalid(err) {
			// The key still works; say why its Secret's metadata is stale.
			decision.Message += "; the Secret's labels or annotations from spec.secretTemplate were refused: " + err.Error()
		} else if err != nil {
			return err
		}
	}
	status.PreviousKey = previous
	if policy.IsIssued(key) {
		status.LifetimeLimit, status.ExpiresAt = decision.LifetimeLimit, decision.ExpiresAt
	} else {
		status.LifetimeLimit, status.ExpiresAt = nil, nil
	}
	if decision.RotationRequest != "" {
		status.Rotation = &keyward.RotationStatus{LastRequest: decision.RotationRequest}
	}
	return nil
}

// secretRefused tells whether the API server refused to write the key's
// Secret for a reason only the user can fix, and what to tell them. The
// API server's message names fields and labels, never Secret data.
func secretRefused(err error, key *keyward.AccessKey) (bool, string, string) {
	switch {
	case apierrors.IsAlreadyExists(err):
		return true, keyward.ReasonSecretNameConflict, fmt.Sprintf("a Secret named %q that Keyward did not generate already exists; delete it or set spec.secretTemplate.name", key.SecretName())
	case apierrors.IsInvalid(err):
		return true, keyward.ReasonSecretInvalid, "the API server refused the key's Secret; check spec.secretTemplate: " + err.Error()
	}
	return false, "", ""
}

// report writes the phase and Ready condition with the rest of the status,
// then records the transition's Event (only once the status is written, so
// a retried reconcile does not record it twice).
func (r *AccessKeyReconciler) report(ctx context.Context, orig, key *keyward.AccessKey, decision policy.Decision) error {
	status := &key.Status
	status.Phase = decision.Phase
	status.ObservedGeneration = key.Generation
	// Ready (True once the key is where its spec asks: Active, Inactive,
	// Expired, Revoked), plus Reconciling or Stalled while it is not, as
	// kstatus reads them (internal/policy/conditions.go).
	policy.SetConditions(&status.Conditions, key.Generation, policy.KeyOutcome(decision.Phase, decision.Reason),
		decision.Reason, decision.Message, r.Now())
	if !equality.Semantic.DeepEqual(orig.Status, key.Status) {
		err := r.Status().Patch(ctx, key, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) && writesMaterial(decision.Material) {
			// The Secret already holds new material: status must say so,
			// whatever else changed on the key in the meantime.
			err = r.recordMaterialStatus(ctx, key)
		}
		if err != nil {
			return err
		}
		logf.FromContext(ctx).V(1).Info("status updated", "phase", decision.Phase, "reason", decision.Reason, "keyID", status.KeyID)
	}
	if event := policy.TransitionEvent(orig.Status.Phase, decision); event != "" {
		r.record(key, event, decision)
	}
	return nil
}

// slot decides the key's slot among every key of its namespace, as listed by
// reader (the cache, or the API server itself before a first issue).
func (r *AccessKeyReconciler) slot(ctx context.Context, reader client.Reader, key *keyward.AccessKey, tenant policy.Tenant, now time.Time) (policy.SlotDecision, error) {
	if policy.IsIssued(key) {
		return policy.SlotDecision{Outcome: policy.SlotHeld}, nil
	}
	var keys keyward.AccessKeyList
	if err := reader.List(ctx, &keys, client.InNamespace(key.Namespace)); err != nil {
		return policy.SlotDecision{}, err
	}
	var apps keyward.ApplicationList
	if err := r.List(ctx, &apps, client.InNamespace(key.Namespace)); err != nil {
		return policy.SlotDecision{}, err
	}
	byName := make(map[string]*keyward.Application, len(apps.Items))
	for i := range apps.Items {
		if apps.Items[i].DeletionTimestamp.IsZero() {
			byName[apps.Items[i].Name] = &apps.Items[i]
		}
	}
	decisions := policy.AllocateSlots(keys.Items, byName, tenant, now, r.Options.SettleDelay)
	if d, ok := decisions[key.Name]; ok {
		return d, nil
	}
	// Not yet in the cache's list: wait until it is, so it is ranked with the others.
	return policy.SlotDecision{Outcome: policy.SlotSettling, SettledAt: now.Add(time.Second)}, nil
}

// secretFrom returns the key's Secret as read by reader, or nil when there
// is none or it is not the key's (someone else's Secret: Create then reports
// the conflict). Reading from the API server (APIReader) also finds a Secret
// whose labels a user stripped, which the label-filtered cache cannot see.
func (r *AccessKeyReconciler) secretFrom(ctx context.Context, reader client.Reader, key *keyward.AccessKey) (*corev1.Secret, error) {
	var s corev1.Secret
	err := reader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.SecretName()}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !secrets.BelongsTo(&s, key) || !s.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return &s, nil
}

// writeMaterial generates new key material, puts it into the key's Secret
// (existing is a fresh read, or nil) and returns it. Material already in
// the Secret is never taken over: it was not recorded in status, so nothing
// relies on it, and it may not come from Keyward.
func (r *AccessKeyReconciler) writeMaterial(ctx context.Context, key *keyward.AccessKey, existing *corev1.Secret) (keyformat.Key, error) {
	material, err := keyformat.Generate()
	if err != nil {
		return keyformat.Key{}, err
	}
	desired := secrets.Desired(key, material)
	if err := controllerutil.SetControllerReference(key, desired, r.Scheme()); err != nil {
		return keyformat.Key{}, err
	}
	if existing == nil {
		return material, r.Create(ctx, desired)
	}
	existing.Type = secrets.SecretType
	existing.Data = desired.Data
	existing.OwnerReferences = desired.OwnerReferences
	secrets.ApplyMetadata(existing, key)
	return material, r.Update(ctx, existing)
}

// recordMaterialStatus writes key's status onto the latest version of the
// AccessKey after its Secret received new material but the first status
// patch lost a race (typically with the owner-reference patch). Only
// lastUsedAt, which the verifier writes, is taken from the latest version.
func (r *AccessKeyReconciler) recordMaterialStatus(ctx context.Context, key *keyward.AccessKey) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var latest keyward.AccessKey
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(key), &latest); err != nil {
			return err
		}
		base := latest.DeepCopy()
		lastUsed := latest.Status.LastUsedAt
		latest.Status = *key.Status.DeepCopy()
		latest.Status.LastUsedAt = lastUsed
		return r.Status().Patch(ctx, &latest, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	})
}

func (r *AccessKeyReconciler) destroyMaterial(ctx context.Context, key *keyward.AccessKey, secret *corev1.Secret) error {
	if secret == nil {
		var err error
		if secret, err = r.secretFrom(ctx, r.APIReader, key); err != nil || secret == nil {
			return err
		}
	}
	return client.IgnoreNotFound(r.Delete(ctx, secret, client.Preconditions{UID: &secret.UID}))
}

// syncSecretMetadata restores the labels, annotations and controller
// reference a user removed from an intact Secret; the key material is left
// alone.
func (r *AccessKeyReconciler) syncSecretMetadata(ctx context.Context, key *keyward.AccessKey, secret *corev1.Secret) error {
	if secret == nil {
		return nil
	}
	orig := secret.DeepCopy()
	changed := secrets.ApplyMetadata(secret, key)
	if !metav1.IsControlledBy(secret, key) {
		if err := controllerutil.SetControllerReference(key, secret, r.Scheme()); err != nil {
			return err
		}
		changed = true
	}
	if !changed {
		return nil
	}
	return r.Patch(ctx, secret, client.MergeFrom(orig))
}

// record emits the Event for a transition. Notes carry the key ID and
// reason, never key material.
func (r *AccessKeyReconciler) record(key *keyward.AccessKey, reason string, d policy.Decision) {
	eventType := corev1.EventTypeNormal
	if d.Phase == keyward.PhaseRejected || reason == keyward.EventSecretRecreated {
		eventType = corev1.EventTypeWarning
	}
	note := d.Message
	if key.Status.KeyID != "" {
		note = fmt.Sprintf("%s (key ID %s)", d.Message, key.Status.KeyID)
	}
	r.Recorder.Eventf(key, nil, eventType, reason, reason, "%s", note)
}

func writesMaterial(a policy.MaterialAction) bool {
	return a == policy.MaterialIssue || a == policy.MaterialReissue || a == policy.MaterialRotate
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// SetupWithManager watches AccessKeys, their Secrets, and what their
// decisions depend on: Applications, TenantSettings and the other keys of
// the namespace (a freed slot promotes the oldest waiting key).
func (r *AccessKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("accesskey").
		For(&keyward.AccessKey{}).
		Owns(&corev1.Secret{}).
		Watches(&keyward.Application{}, handler.EnqueueRequestsFromMapFunc(r.keysOfApplication)).
		Watches(&keyward.TenantSettings{}, handler.EnqueueRequestsFromMapFunc(r.keysOfNamespace)).
		Watches(&keyward.AccessKey{}, handler.EnqueueRequestsFromMapFunc(r.waitingKeysOfNamespace),
			builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, phaseChanged{}))).
		Complete(r)
}

func (r *AccessKeyReconciler) keysOfApplication(ctx context.Context, obj client.Object) []ctrl.Request {
	return listKeys(ctx, r.Client, obj.GetNamespace(), client.MatchingFields{IndexKeyApplication: obj.GetName()}, nil)
}

func (r *AccessKeyReconciler) keysOfNamespace(ctx context.Context, obj client.Object) []ctrl.Request {
	return listKeys(ctx, r.Client, obj.GetNamespace(), nil, nil)
}

// waitingKeysOfNamespace: when a key is created, deleted or changes phase,
// the keys still waiting for a slot in its namespace must look again.
func (r *AccessKeyReconciler) waitingKeysOfNamespace(ctx context.Context, obj client.Object) []ctrl.Request {
	return listKeys(ctx, r.Client, obj.GetNamespace(), nil, func(k *keyward.AccessKey) bool {
		return !policy.IsIssued(k) && k.Name != obj.GetName()
	})
}

// phaseChanged passes updates that change an AccessKey's phase.
type phaseChanged struct{ predicate.Funcs }

func (phaseChanged) Update(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*keyward.AccessKey)
	n, ok2 := e.ObjectNew.(*keyward.AccessKey)
	return ok1 && ok2 && o.Status.Phase != n.Status.Phase
}
