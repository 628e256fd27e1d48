package controllers

import (
	"context"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// Key counts, which the Application and TenantSettings controllers report
// in their status: counted in bursts, within a shared write budget
// (docs/decisions.md, "Issuance at scale").

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
// each after CountsDelay, so that a burst is one status write.
func enqueueCountsOf(targets func(client.Object) []reconcile.Request) handler.EventHandler {
	return enqueueAfter(targets, CountsDelay, CountsDelay)
}

// enqueueAfter queues targets(obj) for every event: after onCreate for a
// creation, after otherwise for any other change (0: at once). The work
// queue keeps the earliest time of a burst, so a burst within the delay is
// one reconcile.
func enqueueAfter(targets func(client.Object) []reconcile.Request, onCreate, otherwise time.Duration) handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object, after time.Duration) {
		for _, req := range targets(obj) {
			if after > 0 {
				q.AddAfter(req, after)
			} else {
				q.Add(req)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object, onCreate)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.ObjectNew, otherwise)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object, otherwise)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object, otherwise)
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
