package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
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
// reconcile gathers what the key depends on, asks internal/policy for a
// plan, has the Secret writer carry out the plan's Secret I/O, writes the
// planned status once and records the plan's Event. Status writes are in
// accesskey_status.go, watches and wake-ups in accesskey_watches.go.
type AccessKeyReconciler struct {
	client.Client
	// APIReader reads Secrets the label-filtered cache cannot see, and
	// confirms what the cache says before material is replaced or destroyed.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Options   Options
	// Now is the clock; tests may replace it.
	Now func() time.Time

	secrets  *secrets.Writer
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

	// Gather.
	obs, secret, err := r.gather(ctx, &key, now)
	if err != nil {
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

	// Act: the Secret I/O; a refusal folds into the plan.
	plan, wrote, err := r.act(ctx, &key, obs, secret, plan)
	if err != nil {
		return ctrl.Result{}, err
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

// gather reads what the key's plan depends on: its Application, the
// tenant's policy and its Secret (digested), from the cache, and the
// Secret again from the API server when the cache's word is not enough
// (policy.ConfirmSecret); for an import, which other key holds the key ID
// it asks for.
func (r *AccessKeyReconciler) gather(ctx context.Context, key *keyward.AccessKey, now time.Time) (policy.Observation, *corev1.Secret, error) {
	app, err := application(ctx, r.Client, key.Namespace, key.Spec.Application)
	if err != nil {
		return policy.Observation{}, nil, err
	}
	tenant, err := tenantPolicy(ctx, r.Client, key.Namespace, r.Options.APIKeysEnabledByDefault)
	if err != nil {
		return policy.Observation{}, nil, err
	}
	secret, err := r.secrets.Read(ctx, key, false)
	if err != nil {
		return policy.Observation{}, nil, err
	}
	state := secrets.Inspect(secret, key)
	if policy.ConfirmSecret(key, state) {
		if secret, err = r.secrets.Read(ctx, key, true); err != nil {
			return policy.Observation{}, nil, err
		}
		state = secrets.Inspect(secret, key)
	}
	heldBy, err := r.importHolder(ctx, key, state)
	if err != nil {
		return policy.Observation{}, nil, err
	}
	return policy.Observation{Key: key, App: app, Tenant: tenant, Secret: state, ImportHeldBy: heldBy,
		Now: now, MaxRequeue: r.Options.MaxRequeue}, secret, nil
}

// act carries out the plan's Secret I/O on secret, what the plan saw at
// the key's Secret name, and returns the plan with what was written
// recorded (or the API server's refusal folded in), and whether new
// material was written.
func (r *AccessKeyReconciler) act(ctx context.Context, key *keyward.AccessKey, obs policy.Observation, secret *corev1.Secret, plan policy.Plan) (policy.Plan, bool, error) {
	switch {
	case plan.Material.Writes():
		material, err := r.secrets.Write(ctx, key, secret, plan.Material)
		if err != nil {
			refusal, ok := secretRefusal(err)
			if !ok {
				return plan, false, err
			}
			logf.FromContext(ctx).V(1).Info("the API server refused the key's Secret", "reason", refusal.Reason, "error", err.Error())
			if plan.Material == policy.MaterialIssue && r.slots.release(key) {
				r.wake(key.Namespace)
			}
			return policy.FoldRefusal(obs, refusal), false, nil
		}
		plan.RecordMaterial(material.ID, keyformat.HashSecret(material.Secret))
		return plan, true, nil
	case plan.Material == policy.MaterialImport:
		if err := r.secrets.Import(ctx, key, secret); err != nil {
			if r.slots.release(key) {
				r.wake(key.Namespace)
			}
			return plan, false, err
		}
		return plan, true, nil
	case plan.Material == policy.MaterialDestroy:
		return plan, false, r.secrets.Destroy(ctx, key)
	case obs.Secret == policy.SecretIntact:
		err := r.secrets.SyncMetadata(ctx, key, secret)
		if apierrors.IsInvalid(err) {
			logf.FromContext(ctx).V(1).Info("the API server refused the Secret's metadata", "error", err.Error())
			return policy.FoldMetadataRefusal(plan, fieldsOf(err)), false, nil
		}
		return plan, false, err
	}
	return plan, false, nil
}

// SetupWithManager watches AccessKeys (not their status updates: those are
// the controller's own) and their Secrets, and what plans depend on:
// Applications and TenantSettings, but only when their spec changes or they
// come or go (never on their status updates); the slot ledger wakes other
// keys when a slot can have freed (accesskey_watches.go).
func (r *AccessKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.secrets = secrets.NewWriter(r.Client, r.APIReader)
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
