package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// TenantSettingsReconciler has one job: report the switch in force and the
// tenant-wide key counts on the namespace's TenantSettings "default".
type TenantSettingsReconciler struct {
	countsReporter
}

// +kubebuilder:rbac:groups=keyward.dev,resources=tenantsettings,verbs=get;list;watch
// +kubebuilder:rbac:groups=keyward.dev,resources=tenantsettings/status,verbs=get;update;patch

func (r *TenantSettingsReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ts keyward.TenantSettings
	if err := r.Get(ctx, req.NamespacedName, &ts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	tenant := policy.TenantFrom(&ts, r.Options.APIKeysEnabledByDefault)
	var keys keyward.AccessKeyList
	if err := r.List(ctx, &keys, client.InNamespace(ts.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}

	orig := ts.DeepCopy()
	counts, next := r.count(keys.Items, r.Now(), tenant.ExpiryWarning)
	ts.Status.APIKeysEnabled = &tenant.Enabled
	ts.Status.Keys = counts
	ts.Status.ObservedGeneration = ts.Generation
	reason, message := keyward.ReasonEnabled, "API keys are switched on in this tenant"
	switch {
	case tenant.Invalid != "":
		reason = keyward.ReasonInvalidTenantSettings
		message = tenant.Invalid + "; no key is issued or verifies in this tenant until it is fixed"
	case !tenant.Enabled:
		reason, message = keyward.ReasonAPIKeysDisabled, "API keys are switched off in this tenant: no key is issued and none verifies"
	}
	// Ready=True on or off (the switch is what the user set); Stalled while
	// a value cannot be used (kstatus).
	policy.SetConditions(&ts.Status.Conditions, ts.Generation, policy.TenantOutcome("TenantSettings", reason), reason,
		policy.BoundMessage(message), r.Now())
	if err := r.patchStatus(ctx, &ts, orig, !equality.Semantic.DeepEqual(orig.Status, ts.Status)); err != nil {
		return ctrl.Result{}, err
	}
	return next, nil
}

func (r *TenantSettingsReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("tenantsettings-status").
		For(&keyward.TenantSettings{}).
		Watches(&keyward.AccessKey{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []ctrl.Request {
			return []ctrl.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: keyward.TenantSettingsName}}}
		}), builder.WithPredicates(countsChanged)).
		Complete(r)
}
