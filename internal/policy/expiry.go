package policy

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// LifetimeLimit is the latest expiry a key issued at issuedAt may have under
// the tenant's maxKeyLifetime, or nil when no lifetime applies. It is fixed
// when the key is first issued, so a later change of the tenant's setting
// does not touch keys issued before.
func LifetimeLimit(issuedAt time.Time, t Tenant) *metav1.Time {
	if t.MaxKeyLifetime <= 0 {
		return nil
	}
	limit := metav1.NewTime(issuedAt.Add(t.MaxKeyLifetime))
	return &limit
}

// EffectiveExpiry is min(requested, lifetimeLimit); nil means never.
func EffectiveExpiry(requested, lifetimeLimit *metav1.Time) *metav1.Time {
	switch {
	case requested == nil && lifetimeLimit == nil:
		return nil
	case requested == nil:
		return lifetimeLimit.DeepCopy()
	case lifetimeLimit == nil || requested.Before(lifetimeLimit):
		return requested.DeepCopy()
	default:
		return lifetimeLimit.DeepCopy()
	}
}

// IsExpired reports whether a key with the given effective expiry is expired at now.
func IsExpired(expiresAt *metav1.Time, now time.Time) bool {
	return expiresAt != nil && !now.Before(expiresAt.Time)
}

// MinRequeue keeps a timer that is due now from spinning.
const MinRequeue = 100 * time.Millisecond

// NextWake returns how long to wait until the earliest of the given moments
// that still lies ahead of now, clamped to [MinRequeue, max]. Moments in the
// past are ignored; with none ahead it returns max, so a lost timer heals.
func NextWake(now time.Time, max time.Duration, moments ...*metav1.Time) time.Duration {
	wait := max
	for _, m := range moments {
		if m == nil {
			continue
		}
		d := m.Sub(now)
		if d <= 0 {
			continue
		}
		if d < wait {
			wait = d
		}
	}
	if wait < MinRequeue {
		wait = MinRequeue
	}
	return wait
}

// ExpiringSoon reports whether an unexpired key expires within warning of now.
func ExpiringSoon(expiresAt *metav1.Time, now time.Time, warning time.Duration) bool {
	return expiresAt != nil && !IsExpired(expiresAt, now) && expiresAt.Sub(now) <= warning
}

// keyExpiry is a key's effective expiry as last recorded by the controller.
func keyExpiry(k *keyward.AccessKey) *metav1.Time { return k.Status.ExpiresAt }

// RequestedExpiry is spec.expiresAt as a time, nil for never, or an error
// naming the field when it cannot be used.
func RequestedExpiry(k *keyward.AccessKey) (*metav1.Time, error) {
	if k.Spec.ExpiresAt == nil {
		return nil, nil
	}
	t, err := k.Spec.ExpiresAt.Parse()
	if err != nil {
		return nil, fmt.Errorf("spec.expiresAt is %w", err)
	}
	return &metav1.Time{Time: t}, nil
}
