package secrets

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
)

// Importable reports whether s, the Secret at key's Secret name, may be
// adopted by an import (docs/backup-restore.md): key names the material in
// both import annotations, and s holds exactly that key — ID, the hash of
// the secret part, and the keyId and application entries a Secret of key
// would have — and is controlled by no other object (key itself controls
// it when a manager stopped after adopting it, before recording it).
func Importable(s *corev1.Secret, key *keyward.AccessKey) bool {
	id, hash := key.Annotations[keyward.ImportKeyIDAnnotation], key.Annotations[keyward.ImportSecretHashAnnotation]
	if s == nil || id == "" || hash == "" || !s.DeletionTimestamp.IsZero() {
		return false
	}
	if metav1.GetControllerOf(s) != nil && !metav1.IsControlledBy(s, key) {
		return false
	}
	m, ok := Material(s)
	l := LayoutOf(s)
	return ok && m.ID == id && keyformat.SecretMatches(m.Secret, hash) &&
		string(s.Data[l.KeyID]) == m.ID && string(s.Data[l.Application]) == key.Spec.Application
}

// Adopt makes s, an Importable Secret, the key's own: Keyward's labels and
// annotations, the entry names key's spec asks for and the key ID
// annotation. The caller sets the controller reference and writes s with
// its resourceVersion, so that what is adopted is what Importable checked.
func Adopt(s *corev1.Secret, key *keyward.AccessKey) {
	ApplyMetadata(s, key)
	ApplyLayout(s, key)
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationKeyID] = key.Annotations[keyward.ImportKeyIDAnnotation]
}
