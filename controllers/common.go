package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

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

// listKeys returns reconcile requests for the AccessKeys of a namespace
// that match the field selector and keep (either may be nil).
func listKeys(ctx context.Context, c client.Client, ns string, fields client.MatchingFields, keep func(*keyward.AccessKey) bool) []ctrl.Request {
	var keys keyward.AccessKeyList
	opts := []client.ListOption{client.InNamespace(ns)}
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
