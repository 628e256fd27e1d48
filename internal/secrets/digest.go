package secrets

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"

	corev1 "k8s.io/api/core/v1"

	"keyward.dev/keyward/internal/keyformat"
)

// The manager keeps no key in memory: its informer cache holds every
// Keyward Secret with each data value replaced by a digest (CacheTransform),
// and a Secret read from the API server is digested as soon as it is read
// (Writer). Inspect and HoldsMaterialOf read digests only. The plaintext
// exists in the manager for the moment a key is written, and while the
// entries of an intact Secret are renamed (Writer.SyncMetadata). See
// docs/security.md.

// lastAppliedAnnotation may hold a copy of a Secret's data (kubectl apply
// of a look-alike): never cached.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// DigestValue is what stands for a data value v: a well-formed key's
// keyformat.Digest (its ID and the hash status records of its secret), any
// other value's "sha256:<hex>" of the value.
func DigestValue(v []byte) []byte {
	if k, err := keyformat.Parse(string(v)); err == nil {
		return []byte(k.Digest())
	}
	sum := sha256.Sum256(v)
	return []byte(keyformat.HashPrefix + hex.EncodeToString(sum[:]))
}

// digestedMark marks a Secret whose values Digest replaced. It is kept in
// metadata.selfLink, which the API server clears before it stores any
// object and has not returned since Kubernetes 1.20: no Secret read from
// the API server carries the mark, so none can pass its values off as
// digests, and a write of a digested Secret drops it.
const digestedMark = "keyward.dev/digested"

// Digest replaces, in place, every data value of s by its DigestValue,
// drops what else could hold one (stringData, the last-applied
// annotation) and marks s as digested; it returns s. A Secret already
// digested is left as it is: client-go may hand the same object to the
// cache transform twice (a streamed list goes through a store that
// transforms before the queue that transforms again).
func Digest(s *corev1.Secret) *corev1.Secret {
	if s == nil || IsDigested(s) {
		return s
	}
	for k, v := range s.Data {
		s.Data[k] = DigestValue(v)
	}
	s.StringData = nil
	delete(s.Annotations, lastAppliedAnnotation)
	s.SetSelfLink(digestedMark)
	return s
}

// IsDigested reports whether s holds digests (Digest) rather than values.
func IsDigested(s *corev1.Secret) bool { return s.GetSelfLink() == digestedMark }

// digested returns s when it is digested, else a digested copy.
func digested(s *corev1.Secret) *corev1.Secret {
	if s == nil || IsDigested(s) {
		return s
	}
	return Digest(s.DeepCopy())
}

// CacheTransform is the manager's cache transform for Keyward Secrets: the
// Secret digested (Digest), without managedFields. client-go calls it
// before an object is stored or handed to any handler, so the cache never
// holds a value.
func CacheTransform(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	return Digest(s), nil
}

// holdsDigestOf reports whether digest v stands for value.
func holdsDigestOf(v []byte, value string) bool {
	return bytes.Equal(v, DigestValue([]byte(value)))
}
