// Package controllers holds Keyward's reconcilers. Each has one job; the
// decisions they act on are pure functions in internal/policy.
package controllers

import (
	"context"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// IndexKeyApplication indexes AccessKeys by spec.application.
const IndexKeyApplication = "spec.application"

// FieldOwner is the field manager of every write the controllers make, so
// managedFields show what Keyward wrote (status, metadata, its Secrets).
const FieldOwner = "keyward"

// CacheOptions restricts the manager's cache to what Keyward reads: of all
// Secrets, only those it generates, so unrelated Secrets cost no memory and
// are never read, and of those no value, only digests: whatever needs a
// value reads it from the API server.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			// Of all Secrets, Keyward's, each value replaced by its digest:
			// the manager's memory holds no key (internal/secrets.CacheTransform).
			&corev1.Secret{}: {Label: labels.SelectorFromSet(secrets.ManagedLabels()), Transform: secrets.CacheTransform},
			// Of all Roles and RoleBindings, only those kept for key owners.
			&rbacv1.Role{}:        {Label: ownerAccessSelector},
			&rbacv1.RoleBinding{}: {Label: ownerAccessSelector},
		},
		// Nothing reads managedFields from the cache; without them every
		// cached AccessKey and Secret costs a fraction of the memory.
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

// ownerAccessSelector selects the Roles and RoleBindings the manager keeps
// for key owners (OwnerAccessReconciler).
var ownerAccessSelector = func() labels.Selector {
	req, err := labels.NewRequirement(policy.LabelOwnerAccess, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*req)
}()

// SetupWithManager registers the field index and every Keyward controller with mgr.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &keyward.AccessKey{}, IndexKeyApplication, func(o client.Object) []string {
		return []string{o.(*keyward.AccessKey).Spec.Application}
	}); err != nil {
		return err
	}
	now := time.Now
	countWrites := rate.NewLimiter(CountsWritesPerSecond, CountsWritesPerSecond)
	for _, c := range []interface{ SetupWithManager(ctrl.Manager) error }{
		&AccessKeyReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
			Recorder: mgr.GetEventRecorder(EventSource), Options: opts, Now: now},
		&AccessKeyOwnerReconciler{Client: mgr.GetClient(), MaxConcurrentReconciles: opts.MaxConcurrentReconciles},
		&OwnerAccessReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()},
		&SecretScrubber{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()},
		&ApplicationReconciler{countsReporter{Client: mgr.GetClient(), Options: opts, Now: now, Writes: countWrites}},
		&TenantSettingsReconciler{countsReporter{Client: mgr.GetClient(), Options: opts, Now: now, Writes: countWrites}},
	} {
		if err := c.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}
