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
	s.Data = map[string][]byte{
		DataAccessKey:   []byte(material.Plaintext()),
		DataKeyID:       []byte(material.ID),
		DataApplication: []byte(key.Spec.Application),
	}
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
	return changed
}

// Material reads the key held in s; ok is false when s holds no
// well-formed key.
func Material(s *corev1.Secret) (keyformat.Key, bool) {
	if s == nil {
		return keyformat.Key{}, false
	}
	k, err := keyformat.Parse(string(s.Data[DataAccessKey]))
	if err != nil {
		return keyformat.Key{}, false
	}
	return k, true
}

// BelongsTo reports whether s is key's Secret: controlled by key, or — when
// someone stripped its owner references — still labelled for key and
// holding the key ID that key's status records. Such a Secret is taken back
// rather than treated as a stranger's, so that revoking the key still
// destroys its material.
func BelongsTo(s *corev1.Secret, key *keyward.AccessKey) bool {
	if metav1.IsControlledBy(s, key) {
		return true
	}
	return metav1.GetControllerOf(s) == nil &&
		s.Labels[LabelManagedBy] == ManagedByValue && s.Labels[LabelAccessKey] == key.Name &&
		key.Status.KeyID != "" && string(s.Data[DataKeyID]) == key.Status.KeyID
}

// Inspect compares what s holds with what key's status says was issued.
func Inspect(s *corev1.Secret, key *keyward.AccessKey) policy.SecretState {
	if s == nil {
		return policy.SecretMissing
	}
	m, ok := Material(s)
	if !ok || m.ID != key.Status.KeyID || !keyformat.SecretMatches(m.Secret, key.Status.SecretHash) ||
		string(s.Data[DataKeyID]) != m.ID || string(s.Data[DataApplication]) != key.Spec.Application {
		return policy.SecretTampered
	}
	return policy.SecretIntact
}
