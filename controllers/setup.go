// Package controllers holds Keyward's reconcilers. Each has one job; the
// decisions they act on are pure functions in internal/policy.
package controllers

import (
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

// Options are the manager-wide settings the controllers share.
type Options struct {
	// APIKeysEnabledByDefault is the switch for tenants whose TenantSettings
	// is missing or leaves apiKeysEnabled unset.
	APIKeysEnabledByDefault bool
	// SettleDelay is how long after its creation second a new key waits
	// before it may take a slot, so that keys created in the same burst are
	// all seen and the oldest win (see docs/limits.md).
	SettleDelay time.Duration
	// MaxRequeue caps every timer so that a lost one heals.
	MaxRequeue time.Duration
}

// DefaultOptions returns the defaults used by the manager's flags.
func DefaultOptions() Options {
	return Options{SettleDelay: 1500 * time.Millisecond, MaxRequeue: 10 * time.Minute}
}

// SetupWithManager registers every Keyward controller with mgr.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	return nil
}
