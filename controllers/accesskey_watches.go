package controllers

import (
	"context"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// What wakes the AccessKey controller: changes of a key, its Secret, its
// Application and its tenant's settings, and slots freed elsewhere.

// keyChanged passes the AccessKey updates a key's plan can depend on: its
// spec (generation), its annotations (rotation), its owner references (the
// Application it belongs to), the start of its deletion and, while it is
// being deleted, its finalizers (its status names them). The controller's
// own status writes, and lastUsedAt, are not among them.
var keyChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return o.GetGeneration() != n.GetGeneration() ||
			!equality.Semantic.DeepEqual(o.GetAnnotations(), n.GetAnnotations()) ||
			!equality.Semantic.DeepEqual(o.GetOwnerReferences(), n.GetOwnerReferences()) ||
			o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero() ||
			(!n.GetDeletionTimestamp().IsZero() && !slices.Equal(o.GetFinalizers(), n.GetFinalizers()))
	},
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

// slotFreedHandler wakes the waiting keys of a namespace when another key
// there can have freed a slot: an update that frees one (slotFreed), or
// the removal of a key that held one.
func (r *AccessKeyReconciler) slotFreedHandler() handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], ns string) {
		for _, req := range r.wakingKeys(ctx, &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns}}) {
			q.Add(req)
		}
	}
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if slotFreed(e.ObjectOld.(*keyward.AccessKey), e.ObjectNew.(*keyward.AccessKey)) {
				enqueue(ctx, q, e.ObjectNew.GetNamespace())
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if k, ok := e.Object.(*keyward.AccessKey); ok && (policy.IsIssued(k) || k.Status.Phase == "" || r.slots.holds(k)) {
				enqueue(ctx, q, k.Namespace)
			}
		},
	}
}

// slotFreed reports whether an update of a key can have freed a slot: an
// issued key changed owner, or its Secret was refused (a Pending key holds
// no slot). A key that starts being deleted frees nothing: it keeps its
// slot until it is gone, and its removal wakes the waiting keys.
func slotFreed(old, new *keyward.AccessKey) bool {
	switch {
	case policy.IsIssued(new) && old.Spec.Owner != new.Spec.Owner:
		return true
	case policy.Refused(new) && !policy.Refused(old):
		return true
	}
	return false
}

// keyOfSecret maps a Keyward Secret to its key: its controller, or the key
// its label names (a look-alike going away may unblock that key).
func keyOfSecret(_ context.Context, obj client.Object) []ctrl.Request {
	var reqs []ctrl.Request
	if ref, ok := policy.ControllingKey(obj); ok {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}})
	}
	if name := obj.GetLabels()[secrets.LabelAccessKey]; name != "" && (len(reqs) == 0 || reqs[0].Name != name) {
		reqs = append(reqs, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}})
	}
	return reqs
}

// keysOfApplication queues the keys that name the Application obj.
func (r *AccessKeyReconciler) keysOfApplication(ctx context.Context, obj client.Object) []ctrl.Request {
	return requestsFor(ctx, r.Client, &keyward.AccessKeyList{}, client.InNamespace(obj.GetNamespace()),
		client.MatchingFields{IndexKeyApplication: obj.GetName()})
}

// keysOfNamespace queues every key of obj's namespace.
func (r *AccessKeyReconciler) keysOfNamespace(ctx context.Context, obj client.Object) []ctrl.Request {
	return requestsFor(ctx, r.Client, &keyward.AccessKeyList{}, client.InNamespace(obj.GetNamespace()))
}
