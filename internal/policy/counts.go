package policy

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// CountKeys counts keys by the phase the controller last recorded. A key
// whose recorded expiry has passed counts as expired even before its
// controller catches up, and an Active key expiring within warning counts
// as expiringSoon too. A key being deleted counts, by the phase last
// recorded before its deletion began, until it is gone: it may still hold
// a slot (docs/limits.md), and counts that dropped it would show room that
// is not there.
func CountKeys(keys []keyward.AccessKey, now time.Time, warning time.Duration) keyward.KeyCounts {
	var c keyward.KeyCounts
	for i := range keys {
		k := &keys[i]
		c.Total++
		phase := k.Status.Phase
		if phase == keyward.PhaseActive && IsExpired(keyExpiry(k), now) {
			phase = keyward.PhaseExpired
		}
		switch phase {
		case keyward.PhaseActive:
			c.Active++
			if ExpiringSoon(keyExpiry(k), now, warning) {
				c.ExpiringSoon++
			}
		case keyward.PhaseInactive:
			c.Inactive++
		case keyward.PhaseExpired:
			c.Expired++
		case keyward.PhaseRevoked:
			c.Revoked++
		case keyward.PhaseRejected:
			c.Rejected++
		default:
			c.Pending++
		}
	}
	return c
}

// NextCountChange is when the counts change by the clock alone: the next
// moment an Active key enters the warning window or expires. Nil when none.
func NextCountChange(keys []keyward.AccessKey, now time.Time, warning time.Duration) *metav1.Time {
	var next *metav1.Time
	consider := func(t time.Time) {
		if t.After(now) && (next == nil || t.Before(next.Time)) {
			m := metav1.NewTime(t)
			next = &m
		}
	}
	for i := range keys {
		k := &keys[i]
		if k.Status.Phase != keyward.PhaseActive || k.Status.ExpiresAt == nil {
			continue
		}
		consider(k.Status.ExpiresAt.Add(-warning))
		consider(k.Status.ExpiresAt.Time)
	}
	return next
}

// SlotsHeld approximates from the counts the keys that hold a slot: all but
// Pending and Rejected (an issued key that is Pending or Rejected now keeps
// its slot too; see docs/limits.md). The limits themselves are decided
// from the keys (SlotBook), never from the counts.
func SlotsHeld(c keyward.KeyCounts) int32 { return c.Total - c.Pending - c.Rejected }
