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
	"sigs.k8s.io/controller-runtime/pkg/event"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// Options are the manager-wide settings the controllers share.
type Options struct {
	// APIKeysEnabledByDefault is the switch for tenants whose TenantSettings
	// is missing or leaves apiKeysEnabled unset.
	APIKeysEnabledByDefault bool
	// MaxRequeue caps every timer so that a lost one heals.
	MaxRequeue time.Duration
	// MaxConcurrentReconciles is how many AccessKeys the AccessKey and the
	// owner-reference controllers each reconcile at once. Limits stay exact whatever the number: slots are decided one
	// namespace at a time (see docs/limits.md).
	MaxConcurrentReconciles int
	// AdmissionPolicies, when set, tells whether the shipped admission
	// policies are installed; every TenantSettings reports it.
	AdmissionPolicies AdmissionPolicies
	// AdmissionChanged, when set, delivers an event whenever that changes,
	// so every TenantSettings is reported again.
	AdmissionChanged <-chan event.GenericEvent
}

// AdmissionPolicies is what the manager knows of its admission policies
// (internal/health.AdmissionPolicies).
type AdmissionPolicies interface {
	Installed() (installed, known bool)
	Missing() []string
}

// DefaultOptions returns the defaults used by the manager's flags.
func DefaultOptions() Options {
	return Options{MaxRequeue: 10 * time.Minute, MaxConcurrentReconciles: 4}
}

// FieldOwner is the field manager of every write the controllers make, so
// managedFields show what Keyward wrote (status, metadata, its Secrets).
const FieldOwner = "keyward"

// CacheOptions restricts the manager's cache to what Keyward reads: of all
// Secrets, only those it generates, so unrelated Secrets cost no memory and
// are never read.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(secrets.ManagedLabels())},
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
