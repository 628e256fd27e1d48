package controllers

import (
	"context"
	"slices"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
)

// IndexKeyApplication indexes AccessKeys by spec.application.
const IndexKeyApplication = "spec.application"

// tenantPolicy reads the namespace's TenantSettings "default" (if any) and
// returns the policy in force.
func tenantPolicy(ctx context.Context, c client.Client, ns string, enabledByDefault bool) (policy.Tenant, error) {
	var ts keyward.TenantSettings
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: keyward.TenantSettingsName}, &ts)
	if apierrors.IsNotFound(err) {
		return policy.TenantFrom(nil, enabledByDefault), nil
	}
	if err != nil {
		return policy.Tenant{}, err
	}
	return policy.TenantFrom(&ts, enabledByDefault), nil
}

// application returns the Application a key names, or nil when it does not
// exist or is being deleted.
func application(ctx context.Context, c client.Reader, ns, name string) (*keyward.Application, error) {
	var app keyward.Application
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &app)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !app.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return &app, nil
}

// listKeys returns reconcile requests for the AccessKeys of a namespace
// that match the field selector and keep (either may be nil).
func listKeys(ctx context.Context, c client.Client, ns string, fields client.MatchingFields, keep func(*keyward.AccessKey) bool) []ctrl.Request {
	var keys keyward.AccessKeyList
	opts := []client.ListOption{client.InNamespace(ns), client.UnsafeDisableDeepCopy}
	if fields != nil {
		opts = append(opts, fields)
	}
	if err := c.List(ctx, &keys, opts...); err != nil {
		logf.FromContext(ctx).Error(err, "listing access keys", "namespace", ns)
		return nil
	}
	reqs := make([]ctrl.Request, 0, len(keys.Items))
	for i := range keys.Items {
		if keep == nil || keep(&keys.Items[i]) {
			reqs = append(reqs, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&keys.Items[i])})
		}
	}
	return reqs
}

// countsReporter is what the Application and TenantSettings controllers
// share: both report key counts in their status.
type countsReporter struct {
	client.Client
	Options Options
	// Writes is the budget all count updates share (CountsWritesPerSecond).
	Writes *rate.Limiter
	// Now is the clock; tests may replace it.
	Now func() time.Time
}

// count returns the counts of keys at now and when to look again: the next
// moment the counts change by the clock alone (a key enters the warning
// window or expires), capped so that a lost timer heals.
func (r *countsReporter) count(keys []keyward.AccessKey, now time.Time, warning time.Duration) (*keyward.KeyCounts, ctrl.Result) {
	counts := policy.CountKeys(keys, now, warning)
	return &counts, ctrl.Result{RequeueAfter: policy.NextWake(now, r.Options.MaxRequeue, policy.NextCountChange(keys, now, warning))}
}

// patchStatus writes obj's status as a merge patch from orig when it
// changed, within the shared budget of count writes; an object deleted
// meanwhile needs no status. A change that arrives while it waits queues
// the object again, so nothing written late stays wrong.
func (r *countsReporter) patchStatus(ctx context.Context, obj, orig client.Object, changed bool) error {
	if !changed {
		return nil
	}
	if r.Writes != nil {
		if err := r.Writes.Wait(ctx); err != nil {
			return err
		}
	}
	err := r.Status().Patch(ctx, obj, client.MergeFrom(orig))
	if apierrors.IsInvalid(err) {
		// The spec no longer validates (it slipped past an older CRD), and
		// the API server validates it with every status write: retrying
		// cannot help until the spec changes, which wakes the object again.
		logf.FromContext(ctx).Info("the API server refuses any status for this object until its spec is fixed", "error", err.Error())
		return nil
	}
	return client.IgnoreNotFound(err)
}

// CountsDelay is how late a change of a key reaches the key counts of its
// Application and TenantSettings: every change within it is written in one
// status update, so a burst of N issues costs about one write a second per
// object instead of N.
const CountsDelay = time.Second

// CountsWritesPerSecond bounds the status updates of all Applications and
// TenantSettings together. A burst over many tenants costs at most this
// many writes a second however many objects it touches (without it, 50
// busy namespaces cost 100 writes a second, 1.3 writes per issued key);
// while B objects are busy, each one's counts are up to B/5 s late.
const CountsWritesPerSecond = 5

// enqueueCountsOf queues the objects whose counts obj's change affects,
// after CountsDelay; the work queue keeps one pending entry per object, so
// the changes of that second are counted together.
func enqueueCountsOf(targets func(client.Object) []reconcile.Request) handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object) {
		for _, req := range targets(obj) {
			q.AddAfter(req, CountsDelay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
	}
}

// countsChanged passes the AccessKey events that can change key counts:
// creations, deletions and changes of phase or recorded expiry (not the
// owner-reference patch or other metadata).
var countsChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*keyward.AccessKey)
		n, ok2 := e.ObjectNew.(*keyward.AccessKey)
		return !ok1 || !ok2 || o.Status.Phase != n.Status.Phase || !o.Status.ExpiresAt.Equal(n.Status.ExpiresAt) ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()
	},
}

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
