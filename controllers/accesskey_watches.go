package controllers

import (
	"context"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

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
