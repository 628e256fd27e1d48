package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// AccessKeyOwnerReconciler has one job: tie every AccessKey to its
// Application by an owner reference, so that deleting the Application
// deletes its keys (and, through theirs, their Secrets) by garbage
// collection. The reference names the Application's UID and is added once:
// a key already tied to an Application of that name — perhaps one deleted
// and created again under the same name — is never re-tied, so it goes
// with the Application it belonged to (policy.ApplicationOf). It patches
// metadata only; the user's spec is never written.
type AccessKeyOwnerReconciler struct {
	client.Client
	// MaxConcurrentReconciles is shared with the AccessKey controller: every
	// new key needs one patch here, so one worker would pace issuance.
	MaxConcurrentReconciles int
}

func (r *AccessKeyOwnerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var key keyward.AccessKey
	if err := r.Get(ctx, req.NamespacedName, &key); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !key.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	app, err := application(ctx, r.Client, key.Namespace, key.Spec.Application)
	if err != nil || app == nil {
		return ctrl.Result{}, err // no Application yet: its creation brings us back
	}
	if _, tied := policy.ApplicationRef(&key); tied {
		return ctrl.Result{}, nil
	}
	orig := key.DeepCopy()
	if err := controllerutil.SetOwnerReference(app, &key, r.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	// The lock keeps a concurrent change of the owner references from being
	// overwritten; losing the race to a status write is normal: look again.
	err = r.Patch(ctx, &key, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: policy.MinRequeue}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

func (r *AccessKeyOwnerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("accesskey-owner").
		// Only keys not tied yet concern it: not every status update.
		For(&keyward.AccessKey{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(obj client.Object) bool {
			k, ok := obj.(*keyward.AccessKey)
			if !ok {
				return false
			}
			_, tied := policy.ApplicationRef(k)
			return !tied
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		// A key waiting for its Application is tied when it is created;
		// nothing else about an Application concerns this controller.
		Watches(&keyward.Application{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []ctrl.Request {
			return requestsFor(ctx, r.Client, &keyward.AccessKeyList{}, client.InNamespace(obj.GetNamespace()),
				client.MatchingFields{IndexKeyApplication: obj.GetName()})
		}), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(event.UpdateEvent) bool { return false },
			DeleteFunc: func(event.DeleteEvent) bool { return false },
		})).
		Complete(r)
}
