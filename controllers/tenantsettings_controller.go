package controllers

import (
	"context"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

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
	reason, message := policy.TenantSettingsCondition(tenant)
	// Ready=True on or off (the switch is what the user set); Stalled while
	// a value cannot be used (kstatus).
	policy.SetConditions(&ts.Status.Conditions, ts.Generation, policy.TenantOutcome("TenantSettings", reason), reason,
		policy.BoundMessage(message), r.Now())
	r.reportAdmission(&ts)
	if err := r.patchStatus(ctx, &ts, orig, !equality.Semantic.DeepEqual(orig.Status, ts.Status)); err != nil {
		return ctrl.Result{}, err
	}
	return next, nil
}

// reportAdmission sets the AdmissionPoliciesInstalled condition from what
// the manager last found, once it knows.
func (r *TenantSettingsReconciler) reportAdmission(ts *keyward.TenantSettings) {
	if r.Options.AdmissionPolicies == nil {
		return
	}
	installed, known := r.Options.AdmissionPolicies.Installed()
	if !known {
		return
	}
	cond := metav1.Condition{Type: keyward.ConditionAdmissionPolicies, Status: metav1.ConditionTrue,
		Reason: keyward.ReasonPoliciesInstalled, ObservedGeneration: ts.Generation,
		Message: "Keyward's admission policies are installed: owners are stamped, revoking and reassigning keys need their verbs, and developers delete only their own keys"}
	if !installed {
		cond.Status, cond.Reason = metav1.ConditionFalse, keyward.ReasonPoliciesMissing
		cond.Message = policy.BoundMessage("Keyward's admission policies are missing (" + strings.Join(r.Options.AdmissionPolicies.Missing(), ", ") +
			"): keys get no owner stamped, anyone who may update a key may revoke it or change its owner, and anyone who may delete keys deletes any; ask a cluster admin to apply config/admission")
	}
	meta.SetStatusCondition(&ts.Status.Conditions, cond)
}

func (r *TenantSettingsReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Options.AdmissionChanged != nil {
		b = b.WatchesRawSource(source.Channel(r.Options.AdmissionChanged, handler.EnqueueRequestsFromMapFunc(
			func(ctx context.Context, _ client.Object) []ctrl.Request {
				var all keyward.TenantSettingsList
				if err := r.List(ctx, &all, client.UnsafeDisableDeepCopy); err != nil {
					return nil
				}
				reqs := make([]ctrl.Request, 0, len(all.Items))
				for i := range all.Items {
					reqs = append(reqs, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&all.Items[i])})
				}
				return reqs
			})))
	}
	return b.
		Named("tenantsettings-status").
		// Its own status writes must not wake it: during a burst each
		// write would trigger the next, past CountsDelay's coalescing.
		For(&keyward.TenantSettings{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&keyward.AccessKey{}, enqueueCountsOf(func(obj client.Object) []ctrl.Request {
			return []ctrl.Request{{NamespacedName: client.ObjectKey{Namespace: obj.GetNamespace(), Name: keyward.TenantSettingsName}}}
		}), builder.WithPredicates(countsChanged)).
		Complete(r)
}
