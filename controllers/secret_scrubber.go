package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// SecretScrubber has one job: no key material outlives its AccessKey. It
// empties the data of every Keyward Secret that is being deleted — a
// finalizer someone added (a backup or sync tool) would otherwise keep the
// key readable in a Terminating Secret — or whose AccessKey is gone, before
// the garbage collector gets to it. AccessKeys carry no finalizer for this.
type SecretScrubber struct {
	client.Client
	// APIReader confirms that a key is gone before its Secret is emptied.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=keyward.dev,resources=accesskeys,verbs=get;list;watch

func (r *SecretScrubber) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var s corev1.Secret
	if err := r.Get(ctx, req.NamespacedName, &s); err != nil || len(s.Data) == 0 {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if s.DeletionTimestamp.IsZero() {
		gone, err := r.keyGone(ctx, &s)
		if err != nil || !gone {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, client.IgnoreNotFound(secrets.Scrub(ctx, r.Client, &s))
}

// keyGone reports whether the AccessKey controlling s no longer exists or
// is being deleted. A Secret without an AccessKey controller is left to
// the key its label names (it may be taken back or be a stranger's).
func (r *SecretScrubber) keyGone(ctx context.Context, s *corev1.Secret) (bool, error) {
	ref, ok := policy.ControllingKey(s)
	if !ok {
		return false, nil
	}
	uid, name := string(ref.UID), types.NamespacedName{Namespace: s.Namespace, Name: ref.Name}
	var key keyward.AccessKey
	err := r.Get(ctx, name, &key)
	if err == nil && string(key.UID) == uid && key.DeletionTimestamp.IsZero() {
		return false, nil // the common case, answered by the cache
	}
	// Emptying cannot be undone: ask the API server, not the cache.
	err = r.APIReader.Get(ctx, name, &key)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return string(key.UID) != uid || !key.DeletionTimestamp.IsZero(), nil
}

// SetupWithManager watches Keyward Secrets that hold data when they appear
// or start being deleted, and AccessKeys when they go, so that their
// Secrets are emptied before the garbage collector gets to them.
func (r *SecretScrubber) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("secret-scrubber").
		For(&corev1.Secret{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return holdsData(e.Object) },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return holdsData(e.ObjectNew) && !e.ObjectNew.GetDeletionTimestamp().IsZero()
			},
			DeleteFunc: func(event.DeleteEvent) bool { return false },
		})).
		Watches(&keyward.AccessKey{}, handler.Funcs{
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				if k, ok := e.Object.(*keyward.AccessKey); ok {
					q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: k.Namespace, Name: k.SecretName()}})
				}
			},
		}).
		Complete(r)
}

func holdsData(obj client.Object) bool {
	s, ok := obj.(*corev1.Secret)
	return ok && len(s.Data) > 0
}
