package controllers

import (
	"context"
	"errors"
	"strings"
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
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// AccessKeyReconciler drives one AccessKey through its lifecycle. Each
// reconcile gathers what the key depends on from the cache, asks
// internal/policy for a plan, carries out the plan's Secret I/O, and writes
// the planned status once.
type AccessKeyReconciler struct {
	client.Client
	// APIReader reads Secrets the label-filtered cache cannot see, and
	// confirms what the cache says before material is replaced or destroyed.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
	// Now is the clock; tests may replace it.
	Now func() time.Time

	slots    *slotLedger
	expected *materialExpectations
	// wakeups carries namespaces where a slot freed inside a reconcile.
	wakeups chan event.GenericEvent
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
	// Gather: the key and everything its plan depends on, from the cache.
	var key keyward.AccessKey
	if err := r.Get(ctx, req.NamespacedName, &key); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil // its Secret goes with it (garbage collector, secret-scrubber)
		}
		return ctrl.Result{}, err
	}
	now := r.Now()
	if !key.DeletionTimestamp.IsZero() {
		r.expected.forget(key.UID)
		return r.showDeleting(ctx, &key, now)
	}
	if r.expected.stale(&key, now) {
		// Our last material write is not in the cache yet: look again
		// once it is.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	app, err := application(ctx, r.Client, key.Namespace, key.Spec.Application)
	if err != nil {
		return ctrl.Result{}, err
	}
	tenant, err := tenantPolicy(ctx, r.Client, key.Namespace, r.Options.APIKeysEnabledByDefault)
	if err != nil {
		return ctrl.Result{}, err
	}
	secret, err := r.secret(ctx, r.Client, &key)
	if err != nil {
		return ctrl.Result{}, err
	}
	obs := policy.Observation{Key: &key, App: app, Tenant: tenant, Secret: secrets.Inspect(secret, &key),
		Now: now, MaxRequeue: r.Options.MaxRequeue}

	// The cache may miss a Secret whose labels were stripped, or lag behind
	// our own last write: before material is replaced, confirm the Secret
	// with the API server. (A first issue needs no read: a taken name
	// refuses the create; destroy reads the Secret itself.) A key waiting
	// for a taken name looks whether it is free before it competes again.
	if p := policy.PlanKey(obs); p.Material == policy.MaterialReissue || p.Material == policy.MaterialRotate || policy.RefusedForName(&key) ||
		policy.ImportRequested(&key) {
		if secret, err = r.secret(ctx, r.APIReader, &key); err != nil {
			return ctrl.Result{}, err
		}
		obs.Secret = secrets.Inspect(secret, &key)
	}
	if obs.ImportHeldBy, err = r.importHolder(ctx, &key, obs.Secret); err != nil {
		return ctrl.Result{}, err
	}

	// Plan; a key that needs a slot is planned by the slot ledger, which
	// records a grant only for a plan that issues.
	var plan policy.Plan
	if policy.NeedsSlot(obs) {
		var ok bool
		if plan, ok, err = r.slots.plan(ctx, &key, obs); err != nil || !ok {
			return ctrl.Result{}, err // !ok: deleted meanwhile
		}
	} else {
		if !policy.IsIssued(&key) && r.slots.release(&key) {
			r.wake(key.Namespace) // it no longer needs the slot it was granted
		}
		plan = policy.PlanKey(obs)
	}

	// Do the Secret I/O; a refusal folds into the plan.
	wrote := false
	switch {
	case plan.Material.Writes():
		material, err := r.writeMaterial(ctx, &key, secret, plan.Material)
		if err != nil {
			refusal, ok := secretRefusal(err)
			if !ok {
				return ctrl.Result{}, err
			}
			logf.FromContext(ctx).V(1).Info("the API server refused the key's Secret", "reason", refusal.Reason, "error", err.Error())
			if plan.Material == policy.MaterialIssue && r.slots.release(&key) {
				r.wake(key.Namespace)
			}
			plan = policy.FoldRefusal(obs, refusal)
			break
		}
		plan.RecordMaterial(material.ID, keyformat.HashSecret(material.Secret))
		wrote = true
	case plan.Material == policy.MaterialImport:
		if err := r.adopt(ctx, &key, secret); err != nil {
			if r.slots.release(&key) {
				r.wake(key.Namespace)
			}
			return ctrl.Result{}, err
		}
		wrote = true
	case plan.Material == policy.MaterialDestroy:
		if err := r.destroy(ctx, &key); err != nil {
			return ctrl.Result{}, err
		}
	case obs.Secret == policy.SecretIntact:
		if err := r.syncSecretMetadata(ctx, &key, secret); apierrors.IsInvalid(err) {
			logf.FromContext(ctx).V(1).Info("the API server refused the Secret's metadata", "error", err.Error())
			plan = policy.FoldMetadataRefusal(plan, fieldsOf(err))
		} else if err != nil {
			return ctrl.Result{}, err
		}
	}

	// An Event that nothing else would record is written before the status
	// (should that fail, it is queued after the status like any other).
	eventRecorded := false
	if plan.Event != nil && plan.Event.BeforeStatus && wrote {
		err := recordNow(ctx, r.Client, &key, plan.Event.Type, plan.Event.Reason, plan.EventNote())
		if err != nil {
			logf.FromContext(ctx).Error(err, "recording an Event before the status write; it is queued instead", "reason", plan.Event.Reason)
		}
		eventRecorded = err == nil
	}

	// Write status once, then record the Event.
	if err := r.writeStatus(ctx, &key, plan, wrote); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil // someone wrote first: look again
		}
		return ctrl.Result{}, client.IgnoreNotFound(err) // deleted meanwhile: its Secret goes with it
	}
	if wrote {
		r.expected.expect(&key, plan.Status.KeyID, now)
	}
	if plan.Event != nil && !eventRecorded {
		r.Recorder.Eventf(&key, nil, plan.Event.Type, plan.Event.Reason, plan.Event.Reason, "%s", plan.EventNote())
	}
	return ctrl.Result{RequeueAfter: plan.RequeueAfter}, nil
}

// showDeleting records in the status of a key being deleted that it is
// (finalizers keep it): Ready=False, reason Deleting, the finalizers named.
// Nothing else is done for it: it keeps whatever slot it held until it is
// gone (the slot ledger counts it), the verifier refuses it, and its
// Secret goes with it. One status patch, and none when the status already
// says so; the API server accepts status writes on a terminating object.
func (r *AccessKeyReconciler) showDeleting(ctx context.Context, key *keyward.AccessKey, now time.Time) (ctrl.Result, error) {
	st := policy.DeletingStatus(key, now)
	if equality.Semantic.DeepEqual(key.Status, st) {
		return ctrl.Result{}, nil
	}
	desired := key.DeepCopy()
	desired.Status = st
	err := r.Status().Patch(ctx, desired, client.MergeFromWithOptions(key, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil
	case apierrors.IsInvalid(err):
		// A spec the restored CRD refuses makes every status write fail
		// (decision 60): nothing to retry until it changes.
		logf.FromContext(ctx).V(1).Info("the API server refused the status of a key being deleted", "error", err.Error())
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// writeStatus writes the planned status with one patch; after a material
// write that patch cannot lose a race, so a written Secret is always
// recorded (should it conflict all the same, the status goes onto the
// latest version of the key). If the API
// server refuses the status as invalid, a minimal one (phase, Ready with
// its reason, the material record) is written instead, so that no key is
// left without a status.
func (r *AccessKeyReconciler) writeStatus(ctx context.Context, key *keyward.AccessKey, plan policy.Plan, wrote bool) error {
	if equality.Semantic.DeepEqual(key.Status, plan.Status) {
		return nil
	}
	desired := key.DeepCopy()
	desired.Status = plan.Status
	// Optimistic locking keeps a stale view from overwriting newer status.
	// After a material write the Secret holds the new key whatever else
	// changed meanwhile (typically the owner-reference patch), so the patch
	// goes through without the lock: one request, and the key is recorded.
	var opts []client.MergeFromOption
	if !wrote {
		opts = append(opts, client.MergeFromWithOptimisticLock{})
	}
	err := r.Status().Patch(ctx, desired, client.MergeFromWithOptions(key, opts...))
	switch {
	case err == nil:
	case apierrors.IsConflict(err) && wrote:
		err = r.reapplyStatus(ctx, key, plan.Status)
	case apierrors.IsInvalid(err):
		logf.FromContext(ctx).V(1).Info("the API server refused the planned status; writing a minimal one", "error", err.Error())
		err = r.reapplyStatus(ctx, key, policy.MinimalStatus(plan, key))
	}
	if err == nil {
		logf.FromContext(ctx).V(1).Info("status updated", "phase", plan.Status.Phase, "reason", plan.Ready().Reason, "keyID", plan.Status.KeyID)
	}
	return err
}

// reapplyStatus writes status onto the latest version of the key. Only
// lastUsedAt, which the verifier writes, is taken from the latest version.
func (r *AccessKeyReconciler) reapplyStatus(ctx context.Context, key *keyward.AccessKey, status keyward.AccessKeyStatus) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var latest keyward.AccessKey
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(key), &latest); err != nil {
			return err
		}
		if latest.UID != key.UID {
			return apierrors.NewNotFound(keyward.GroupVersion.WithResource("accesskeys").GroupResource(), key.Name)
		}
		lastUsed := latest.Status.LastUsedAt
		latest.Status = *status.DeepCopy()
		latest.Status.LastUsedAt = lastUsed
		return r.Status().Update(ctx, &latest)
	})
}

// secret returns the Secret at the key's Secret name as read by reader,
// or nil when there is none.
func (r *AccessKeyReconciler) secret(ctx context.Context, reader client.Reader, key *keyward.AccessKey) (*corev1.Secret, error) {
	var s corev1.Secret
	err := reader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.SecretName()}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// writeMaterial generates new key material and puts it into the key's
// Secret; existing is what the plan saw at the Secret name. Fresh material
// goes into a new Secret unless existing is the key's own intact Secret
// (rotation) or its own Secret whose material was never recorded (a crash
// after the Secret write): material already in a Secret is never adopted,
// and a Secret someone edited is emptied and deleted, not reused with
// whatever finalizers, labels or annotations were added to it.
func (r *AccessKeyReconciler) writeMaterial(ctx context.Context, key *keyward.AccessKey, existing *corev1.Secret, action policy.MaterialAction) (keyformat.Key, error) {
	material, err := keyformat.Generate()
	if err != nil {
		return keyformat.Key{}, err
	}
	desired := secrets.Desired(key, material)
	if err := controllerutil.SetControllerReference(key, desired, r.Scheme()); err != nil {
		return keyformat.Key{}, err
	}
	if action == policy.MaterialIssue {
		err := r.Create(ctx, desired)
		if !apierrors.IsAlreadyExists(err) {
			return material, err
		}
		// Ours from an unrecorded issue? Then it gets the new material.
		if existing, err = r.secret(ctx, r.APIReader, key); err != nil {
			return keyformat.Key{}, err
		}
		if existing == nil || !metav1.IsControlledBy(existing, key) || !existing.DeletionTimestamp.IsZero() {
			return keyformat.Key{}, apierrors.NewAlreadyExists(corev1.Resource("secrets"), key.SecretName())
		}
		return material, r.overwrite(ctx, existing, desired)
	}
	switch secrets.Inspect(existing, key) {
	case policy.SecretMissing:
		if existing != nil { // emptied, being deleted: create once it is gone
			return keyformat.Key{}, apierrors.NewAlreadyExists(corev1.Resource("secrets"), key.SecretName())
		}
		return material, r.Create(ctx, desired)
	case policy.SecretIntact: // a rotation
		return material, r.overwrite(ctx, existing, desired)
	case policy.SecretTampered:
		if err := r.scrubAndDelete(ctx, existing); err != nil {
			return keyformat.Key{}, err
		}
		return material, r.Create(ctx, desired) // AlreadyExists while a finalizer keeps the old one
	}
	return keyformat.Key{}, apierrors.NewAlreadyExists(corev1.Resource("secrets"), key.SecretName())
}

// overwrite puts desired's material, type, labels and controller reference
// into existing, one of the key's own Secrets.
func (r *AccessKeyReconciler) overwrite(ctx context.Context, existing, desired *corev1.Secret) error {
	existing.Type = desired.Type
	existing.Data = desired.Data
	existing.OwnerReferences = desired.OwnerReferences
	existing.Labels, existing.Annotations = mergeMaps(existing.Labels, desired.Labels), mergeMaps(existing.Annotations, desired.Annotations)
	return r.Update(ctx, existing)
}

// destroy empties and deletes the Secret holding the key's material. It is
// found with an API read by name, so stripped labels do not hide it, and
// recognised by its controller or by the key IDs status records, so a
// stripped owner reference does not either. Emptying comes first: a
// finalizer someone added keeps a deleted Secret, and it must keep no key.
func (r *AccessKeyReconciler) destroy(ctx context.Context, key *keyward.AccessKey) error {
	name := key.Status.SecretName
	if name == "" {
		name = key.SecretName()
	}
	var s corev1.Secret
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !secrets.HoldsMaterialOf(&s, key) {
		return nil // someone else's Secret: not ours to touch
	}
	if metav1.GetControllerOf(&s) == nil {
		// Its owner reference was stripped: the write that empties it
		// takes it back, so that a manager stopped before the delete
		// still knows the emptied Secret as the key's (and the garbage
		// collector takes it with the key).
		if err := controllerutil.SetControllerReference(key, &s, r.Scheme()); err != nil {
			return err
		}
	}
	return r.scrubAndDelete(ctx, &s)
}

// scrubAndDelete empties s's data, then deletes it.
func (r *AccessKeyReconciler) scrubAndDelete(ctx context.Context, s *corev1.Secret) error {
	if err := scrub(ctx, r.Client, s); err != nil {
		return err
	}
	if !s.DeletionTimestamp.IsZero() {
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, s, client.Preconditions{UID: &s.UID}))
}

// scrub empties the data of s. An immutable Secret cannot be emptied; it
// is deleted all the same.
func scrub(ctx context.Context, c client.Client, s *corev1.Secret) error {
	if len(s.Data) == 0 && len(s.StringData) == 0 {
		return nil
	}
	s.Data, s.StringData = nil, nil
	err := c.Update(ctx, s)
	if apierrors.IsInvalid(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// syncSecretMetadata restores the labels, annotations and controller
// reference someone removed from the key's intact Secret, and gives its
// entries the names spec.secretTemplate.dataKeys asks for; the key
// material is left alone.
func (r *AccessKeyReconciler) syncSecretMetadata(ctx context.Context, key *keyward.AccessKey, secret *corev1.Secret) error {
	orig := secret.DeepCopy()
	changed := secrets.ApplyMetadata(secret, key)
	changed = secrets.ApplyLayout(secret, key) || changed
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

// secretRefusal tells whether the API server refused the key's Secret for
// a reason only the user can fix, and which spec fields are at fault. The
// API server's message is not passed on: it may echo any template value.
func secretRefusal(err error) (policy.Refusal, bool) {
	switch {
	case apierrors.IsAlreadyExists(err):
		return policy.Refusal{Reason: keyward.ReasonSecretNameConflict}, true
	case apierrors.IsInvalid(err):
		return policy.Refusal{Reason: keyward.ReasonSecretInvalid, Fields: fieldsOf(err)}, true
	}
	return policy.Refusal{}, false
}

// fieldsOf maps the fields an Invalid error names on the Secret to the
// AccessKey spec fields that set them.
func fieldsOf(err error) []string {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range status.Status().Details.Causes {
		var f string
		switch {
		case strings.HasPrefix(c.Field, "metadata.labels"):
			f = "spec.secretTemplate.labels"
		case strings.HasPrefix(c.Field, "metadata.annotations"):
			f = "spec.secretTemplate.annotations"
		case strings.HasPrefix(c.Field, "metadata.name"):
			f = "spec.secretTemplate.name"
		default:
			continue
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

func mergeMaps(have, want map[string]string) map[string]string {
	if have == nil {
		have = map[string]string{}
	}
	for k, v := range want {
		have[k] = v
	}
	return have
}

// wake asks for the keys of ns that a freed slot changes to be
// reconciled (see wakingKeys).
func (r *AccessKeyReconciler) wake(ns string) {
	ev := event.GenericEvent{Object: &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns}}}
	select {
	case r.wakeups <- ev:
	default:
		go func() { r.wakeups <- ev }() // never block a worker
	}
}

// wakingKeys returns the keys of obj's namespace whose slot decision a
// freed slot changes (see slotLedger.waking).
func (r *AccessKeyReconciler) wakingKeys(ctx context.Context, obj client.Object) []ctrl.Request {
	ns := obj.GetNamespace()
	tenant, err := tenantPolicy(ctx, r.Client, ns, r.Options.APIKeysEnabledByDefault)
	if err == nil {
		var keys []types.NamespacedName
		if keys, err = r.slots.waking(ctx, ns, tenant); err == nil {
			reqs := make([]ctrl.Request, len(keys))
			for i := range keys {
				reqs[i] = ctrl.Request{NamespacedName: keys[i]}
			}
			return reqs
		}
	}
	logf.FromContext(ctx).Error(err, "waking waiting keys", "namespace", ns)
	return nil
}

// SetupWithManager watches AccessKeys (not their status updates: those are
// the controller's own) and their Secrets, and what plans depend on:
// Applications and TenantSettings, but only when their spec changes or they
// come or go (never on their status updates), and other keys only when a
// slot can have freed.
func (r *AccessKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.expected = newMaterialExpectations()
	r.wakeups = make(chan event.GenericEvent, 1024)
	// The ledger's books follow the cache's keys, Applications and Secrets,
	// and wake a namespace's waiting keys when a slot can have freed.
	var err error
	if r.slots, err = newSlotLedger(context.Background(), mgr.GetCache(), r.wake); err != nil {
		return err
	}
	specChanged := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("accesskey").
		For(&keyward.AccessKey{}, builder.WithPredicates(keyChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.MaxConcurrentReconciles}).
		// A Secret matters when it changes or goes; its creation is ours,
		// or shows when the key tries to write its own — except a Secret
		// restored without an owner, which a key waiting to import it
		// needs to see.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(keyOfSecret), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return metav1.GetControllerOf(e.Object) == nil },
		})).
		Watches(&keyward.Application{}, handler.EnqueueRequestsFromMapFunc(r.keysOfApplication), specChanged).
		Watches(&keyward.TenantSettings{}, handler.EnqueueRequestsFromMapFunc(r.keysOfNamespace), specChanged).
		WatchesRawSource(source.Channel(r.wakeups, handler.EnqueueRequestsFromMapFunc(r.wakingKeys))).
		Complete(r)
}

// keyOfSecret maps a Keyward Secret to its key: its controller, or the key
// its label names (a look-alike going away may unblock that key).
func keyOfSecret(_ context.Context, obj client.Object) []ctrl.Request {
	var reqs []ctrl.Request
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "AccessKey" {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}})
	}
	if name := obj.GetLabels()[secrets.LabelAccessKey]; name != "" && (len(reqs) == 0 || reqs[0].Name != name) {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}})
	}
	return reqs
}

func (r *AccessKeyReconciler) keysOfApplication(ctx context.Context, obj client.Object) []ctrl.Request {
	return listKeys(ctx, r.Client, obj.GetNamespace(), client.MatchingFields{IndexKeyApplication: obj.GetName()}, nil)
}

func (r *AccessKeyReconciler) keysOfNamespace(ctx context.Context, obj client.Object) []ctrl.Request {
	return listKeys(ctx, r.Client, obj.GetNamespace(), nil, nil)
}
