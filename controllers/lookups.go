package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
)

// What the controllers read about a key's tenant and Application.

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
