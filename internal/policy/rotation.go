package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// MaxRotationRecord is the longest rotate annotation value kept as it is in
// status.rotation.lastRequest; longer values are kept as their SHA-256.
const MaxRotationRecord = 64

// RotationRecord is how a rotate annotation value is kept in
// status.rotation.lastRequest: as it is when short, else as its SHA-256, so
// that a value of any size (annotations may hold 256 KiB) leaves status
// writable. Requests are compared in the same form.
func RotationRecord(v string) string {
	if len(v) <= MaxRotationRecord {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// rotationRequested reports whether the rotate annotation holds a value not yet acted on.
func rotationRequested(k *keyward.AccessKey) bool {
	v, ok := k.Annotations[keyward.RotateAnnotation]
	return ok && v != "" && RotationRecord(v) != rotationRecorded(k)
}

func rotationRecorded(k *keyward.AccessKey) string {
	if k.Status.Rotation == nil {
		return ""
	}
	return k.Status.Rotation.LastRequest
}

// GracePeriod is how long a rotated-out key keeps verifying.
// An unusable or too long value is cut to what the API allows (fail
// closed: an unreadable grace period is none).
func GracePeriod(k *keyward.AccessKey) time.Duration {
	if k.Spec.Rotation == nil || k.Spec.Rotation.GracePeriod == nil {
		return 0
	}
	d, err := k.Spec.Rotation.GracePeriod.Parse()
	if err != nil {
		return 0
	}
	return min(d, keyward.MaxGracePeriod)
}

// PreviousKeyAfter returns status.previousKey as it should be at now: a
// rotation with a grace period keeps the outgoing key until it ends; an
// ended grace period drops it. The previous key never outlives the key
// itself: its validUntil is cut to the key's effective expiry (which the
// tenant's lifetime limit already bounds).
func PreviousKeyAfter(k *keyward.AccessKey, rotated bool, now time.Time) *keyward.PreviousKey {
	var pk *keyward.PreviousKey
	if rotated {
		grace := GracePeriod(k)
		if grace == 0 || k.Status.KeyID == "" || k.Status.SecretHash == "" {
			return nil
		}
		pk = &keyward.PreviousKey{KeyID: k.Status.KeyID, SecretHash: k.Status.SecretHash, ValidUntil: metav1.NewTime(now.Add(grace))}
	} else if k.Status.PreviousKey != nil {
		pk = k.Status.PreviousKey.DeepCopy()
	} else {
		return nil
	}
	requested, err := RequestedExpiry(k)
	if err != nil {
		return nil // fail closed
	}
	if expiry := EffectiveExpiry(requested, k.Status.LifetimeLimit); expiry != nil && expiry.Before(&pk.ValidUntil) {
		pk.ValidUntil = *expiry.DeepCopy()
	}
	if !now.Before(pk.ValidUntil.Time) {
		return nil
	}
	return pk
}

// transitionEvent names the Event to record when a key moves from one
