package secrets

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

// Desired returns the Secret that should hold key's material: data, type,
// labels (the template's, then Keyward's, which win) and annotations. The
// AccessKey's own labels are deliberately not copied: GitOps tools would
// take the Secret for one of theirs and prune it. The owner reference is set
// by the caller.
func Desired(key *keyward.AccessKey, material keyformat.Key) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: key.SecretName(), Namespace: key.Namespace},
		Type:       SecretType,
	}
	ApplyMetadata(s, key)
	l := LayoutFor(key)
	s.Data = map[string][]byte{
		l.AccessKey:   []byte(material.Plaintext()),
		l.KeyID:       []byte(material.ID),
		l.Application: []byte(key.Spec.Application),
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationDataKeys] = l.String()
	s.Annotations[AnnotationKeyID] = material.ID
	return s
}

// ApplyMetadata sets the labels and annotations key wants on s and reports
// whether anything changed. Labels and annotations that others added are left alone.
func ApplyMetadata(s *corev1.Secret, key *keyward.AccessKey) bool {
	changed := false
	set := func(m *map[string]string, k, v string) {
		if *m == nil {
			*m = map[string]string{}
		}
		if old, ok := (*m)[k]; !ok || old != v {
			(*m)[k] = v
			changed = true
		}
	}
	if t := key.Spec.SecretTemplate; t != nil {
		for k, v := range t.Labels {
			if k != LabelManagedBy && k != LabelAccessKey { // Keyward's own labels win
				set(&s.Labels, k, v)
			}
		}
		for k, v := range t.Annotations {
			set(&s.Annotations, k, v)
		}
	}
	set(&s.Labels, LabelManagedBy, ManagedByValue)
	set(&s.Labels, LabelAccessKey, key.Name)
	if id := key.Status.KeyID; id != "" {
		set(&s.Annotations, AnnotationKeyID, id)
	}
	return changed
}

// Material reads the key held in s, a Secret as the API server holds it
// (not digested); ok is false when s holds no well-formed key.
func Material(s *corev1.Secret) (keyformat.Key, bool) {
	if s == nil {
		return keyformat.Key{}, false
	}
	k, err := keyformat.Parse(string(s.Data[LayoutOf(s).AccessKey]))
	if err != nil {
		return keyformat.Key{}, false
	}
	return k, true
}

// Inspect says what s, the Secret found at key's Secret name (nil when
// none), is to key; it reads digests (a Secret not digested yet is read
// through a digested copy). The key's Secret is the one it controls; a
// Secret whose owner reference someone stripped is taken back only while it
// still holds exactly the key status records. Anything else at that name —
// a stranger's Secret, or a look-alike with Keyward's labels and the public
// key ID — is foreign: never used, overwritten or adopted, unless an import
// names exactly its material (Importable).
func Inspect(s *corev1.Secret, key *keyward.AccessKey) policy.SecretState {
	s = digested(s)
	if s == nil || (!s.DeletionTimestamp.IsZero() && len(s.Data) == 0) {
		return policy.SecretMissing
	}
	if policy.ImportRequested(key) && Importable(s, key) {
		return policy.SecretImportable
	}
	controlled := metav1.IsControlledBy(s, key)
	intact := s.DeletionTimestamp.IsZero() && holdsRecordedKey(s, key)
	switch {
	case controlled && intact:
		return policy.SecretIntact
	case controlled:
		return policy.SecretTampered
	case metav1.GetControllerOf(s) == nil && intact:
		return policy.SecretIntact // its owner reference was stripped: taken back
	}
	return policy.SecretForeign
}

// holdsRecordedKey reports whether s, digested, holds exactly the key status
// records: the key whose ID and secret hash status records, that ID, and
// the key's application.
func holdsRecordedKey(s *corev1.Secret, key *keyward.AccessKey) bool {
	l := LayoutOf(s)
	id, hash, ok := keyformat.ParseDigest(string(s.Data[l.AccessKey]))
	return ok && key.Status.KeyID != "" && id == key.Status.KeyID &&
		keyformat.HashesMatch(hash, key.Status.SecretHash) &&
		holdsDigestOf(s.Data[l.KeyID], id) && holdsDigestOf(s.Data[l.Application], key.Spec.Application)
}

// HoldsMaterialOf reports whether s must be destroyed with key's material: key controls it, or it holds (in keyId or accessKey) a key ID
// that key's status records — whatever happened to its labels and owner
// references.
func HoldsMaterialOf(s *corev1.Secret, key *keyward.AccessKey) bool {
	if metav1.IsControlledBy(s, key) {
		return true
	}
	s = digested(s)
	ids := []string{key.Status.KeyID}
	if pk := key.Status.PreviousKey; pk != nil {
		ids = append(ids, pk.KeyID)
	}
	// Any entry, whatever its name: the layout annotation may be tampered with too.
	for _, v := range s.Data {
		held, _, isKey := keyformat.ParseDigest(string(v))
		for _, id := range ids {
			if id != "" && ((isKey && held == id) || holdsDigestOf(v, id)) {
				return true
			}
		}
	}
	return false
}

// MatchStatus reports which of the materials k's status records — its
// current key, or the previous one kept for a rotation's grace — the
// presented key is (keyformat.MatchMaterial). Whether the previous one is
// still within its grace is the caller's to judge.
func MatchStatus(presented keyformat.Key, k *keyward.AccessKey) keyformat.Match {
	var previous keyformat.Material
	if pk := k.Status.PreviousKey; pk != nil {
		previous = keyformat.Material{ID: pk.KeyID, Hash: pk.SecretHash}
	}
	return keyformat.MatchMaterial(presented, keyformat.Material{ID: k.Status.KeyID, Hash: k.Status.SecretHash}, previous)
}
