package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// AccessKeyOwnerReconciler has one job: give every AccessKey an owner
// reference to its Application, so that deleting the Application deletes
// its keys (and, through theirs, their Secrets) by garbage collection.
// It patches metadata only; the user's spec is never written.
type AccessKeyOwnerReconciler struct {
	client.Client
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
	if hasOwnerRef(&key, app) {
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

func hasOwnerRef(obj metav1.Object, owner metav1.Object) bool {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.UID == owner.GetUID() {
			return true
		}
	}
	return false
}

func (r *AccessKeyOwnerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("accesskey-owner").
		For(&keyward.AccessKey{}).
		Watches(&keyward.Application{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []ctrl.Request {
			return listKeys(ctx, r.Client, obj.GetNamespace(), client.MatchingFields{IndexKeyApplication: obj.GetName()}, nil)
		})).
		Complete(r)
}
