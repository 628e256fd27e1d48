package controllers

import (
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/event"

	"keyward.dev/keyward/internal/policy"
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

// MinMaxRequeue is the smallest --max-requeue: below it every key would be
// looked at again many times a second.
const MinMaxRequeue = 10 * policy.MinRequeue

// Validate refuses settings the manager cannot run with.
func (o Options) Validate() error {
	if o.MaxRequeue < MinMaxRequeue {
		return fmt.Errorf("--max-requeue must be at least %s (got %s)", MinMaxRequeue, o.MaxRequeue)
	}
	return nil
}
