package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// ApplicationReconciler has one job: report an Application's key counts
// (including expired and expiring within the tenant's warning window).
type ApplicationReconciler struct {
	countsReporter
}

// +kubebuilder:rbac:groups=keyward.dev,resources=applications,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=applications/status,verbs=get;update;patch

func (r *ApplicationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var app keyward.Application
	if err := r.Get(ctx, req.NamespacedName, &app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	tenant, err := tenantPolicy(ctx, r.Client, app.Namespace, r.Options.APIKeysEnabledByDefault)
	if err != nil {
		return ctrl.Result{}, err
	}
	var keys keyward.AccessKeyList
	if err := r.List(ctx, &keys, client.InNamespace(app.Namespace), client.MatchingFields{IndexKeyApplication: app.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}

	orig := app.DeepCopy()
	counts, next := r.count(keys.Items, r.Now(), tenant.ExpiryWarning)
	app.Status.Keys = counts
	app.Status.ObservedGeneration = app.Generation
	reason, message := policy.ApplicationCondition(tenant, &app, *counts)
	// Ready=True when its keys can be issued; Reconciling while the tenant
	// is switched off, Stalled while its TenantSettings is invalid (kstatus).
	policy.SetConditions(&app.Status.Conditions, app.Generation, policy.TenantOutcome("Application", reason), reason,
		policy.BoundMessage(message), r.Now())
	policy.SetScopeNames(&app.Status.Conditions, app.Generation, app.Spec.Scopes, r.Now())
	if err := r.patchStatus(ctx, &app, orig, !equality.Semantic.DeepEqual(orig.Status, app.Status)); err != nil {
		return ctrl.Result{}, err
	}
	return next, nil
}

func (r *ApplicationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("application-status").
		// Its own status writes must not wake it: during a burst each
		// write would trigger the next, past CountsDelay's coalescing.
		For(&keyward.Application{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&keyward.AccessKey{}, enqueueCountsOf(func(obj client.Object) []ctrl.Request {
			return []ctrl.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: obj.(*keyward.AccessKey).Spec.Application}}}
		}), builder.WithPredicates(countsChanged)).
		Watches(&keyward.TenantSettings{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []ctrl.Request {
			var apps keyward.ApplicationList
			if err := r.List(ctx, &apps, client.InNamespace(obj.GetNamespace()), client.UnsafeDisableDeepCopy); err != nil {
				return nil
			}
			reqs := make([]ctrl.Request, 0, len(apps.Items))
			for i := range apps.Items {
				reqs = append(reqs, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&apps.Items[i])})
			}
			return reqs
		}), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}
