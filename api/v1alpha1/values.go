package v1alpha1

import (
	"errors"
	"fmt"
	"time"
)

// Times and durations that users write in a spec are kept as strings in Go.
// metav1.Time and metav1.Duration parse while they are decoded, and a value
// the API server accepted but Go cannot parse (an offset of +25:00, a year
// past 9999 in UTC) would then fail the decoding of every list and watch of
// the kind — one tenant's object would stop the manager's informer for all
// tenants. A string always decodes; the controllers parse it with Parse and
// answer an unusable value with a condition on that object alone. The CRD
// schema refuses such values in the first place (pattern and CEL rules on
// each field); this is the second line of defence.

// Bounds of the times and durations the API accepts. Every time the
// manager writes back (status.expiresAt, previousKey.validUntil) lies
// within them, so status can always be written.
var (
	// MinTime is the earliest time a spec may name.
	MinTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	// MaxTime is the latest time a spec may name: far enough for "never",
	// early enough that adding a lifetime or grace period stays in range.
	MaxTime = time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Duration bounds, as Go durations and as written in CEL rules.
const (
	// MaxGracePeriod bounds spec.rotation.gracePeriod (30 days).
	MaxGracePeriod = 720 * time.Hour
	// MaxLifetime bounds TenantSettings durations (100 years); Go durations
	// end at about 292 years.
	MaxLifetime = 876000 * time.Hour
)

// ErrOutOfRange is returned for a time outside [MinTime, MaxTime].
var ErrOutOfRange = errors.New("out of range")

// Timestamp is an RFC 3339 time written by a user, such as
// 2027-01-31T00:00:00Z.
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:Format=date-time
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
// +kubebuilder:validation:XValidation:rule="self >= timestamp('1970-01-01T00:00:00Z') && self <= timestamp('9000-01-01T00:00:00Z')",message="must be an RFC 3339 time between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z, such as 2027-01-31T00:00:00Z"
type Timestamp string

// NewTimestamp returns t as a Timestamp (UTC).
func NewTimestamp(t time.Time) *Timestamp {
	ts := Timestamp(t.UTC().Format(time.RFC3339Nano))
	return &ts
}

// Parse returns the time, or an error that says what is wrong without
// repeating the value.
func (t Timestamp) Parse() (time.Time, error) {
	v, err := time.Parse(time.RFC3339, string(t))
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time such as 2027-01-31T00:00:00Z")
	}
	if v.Before(MinTime) || v.After(MaxTime) {
		return time.Time{}, fmt.Errorf("%w: must lie between %s and %s", ErrOutOfRange,
			MinTime.Format(time.RFC3339), MaxTime.Format(time.RFC3339))
	}
	return v.UTC(), nil
}

// Duration is a Go duration written by a user, such as 90m or 720h.
// +kubebuilder:validation:Type=string
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('876000h')",message="must be a duration between 0s and 876000h (100 years), such as 90m or 720h"
type Duration string

// NewDuration returns d as a Duration.
func NewDuration(d time.Duration) *Duration {
	v := Duration(d.String())
	return &v
}

// Parse returns the duration, or an error that says what is wrong without
// repeating the value.
func (d Duration) Parse() (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, errors.New("not a duration such as 90m or 720h")
	}
	if v < 0 {
		return 0, errors.New("must not be negative")
	}
	if v > MaxLifetime {
		return 0, fmt.Errorf("%w: at most %s", ErrOutOfRange, MaxLifetime)
	}
	return v, nil
}
