package secrets

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// Annotations Keyward sets on a generated Secret.
const (
	// AnnotationKeyID holds the current key ID, so a pod-template checksum
	// or a reloader can restart workloads when the key rotates.
	AnnotationKeyID = "keyward.dev/key-id"
	// AnnotationDataKeys records the names of the entries the Secret was
	// written with, so a change of spec.secretTemplate.dataKeys renames the
	// entries instead of reading the Secret as edited.
	AnnotationDataKeys = "keyward.dev/data-keys"
)

// Layout names the three entries of a key's Secret.
type Layout struct{ AccessKey, KeyID, Application string }

// DefaultLayout is the documented one (docs/kinds.md): accessKey, keyId, application.
var DefaultLayout = Layout{DataAccessKey, DataKeyID, DataApplication}

// LayoutFor is the layout key asks for in spec.secretTemplate.dataKeys.
func LayoutFor(key *keyward.AccessKey) Layout {
	l := DefaultLayout
	if t := key.Spec.SecretTemplate; t != nil && t.DataKeys != nil {
		set := func(dst *string, v string) {
			if v != "" {
				*dst = v
			}
		}
		set(&l.AccessKey, t.DataKeys.AccessKey)
		set(&l.KeyID, t.DataKeys.KeyID)
		set(&l.Application, t.DataKeys.Application)
	}
	return l
}

// LayoutOf is the layout s was written with (its annotation; the default
// for a Secret written before data keys could be renamed).
func LayoutOf(s *corev1.Secret) Layout {
	parts := strings.Split(s.Annotations[AnnotationDataKeys], ",")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return DefaultLayout
	}
	return Layout{parts[0], parts[1], parts[2]}
}

func (l Layout) String() string { return l.AccessKey + "," + l.KeyID + "," + l.Application }

// LayoutChanged reports whether s's entries are not (or not recorded as)
// at the names key asks for.
func LayoutChanged(s *corev1.Secret, key *keyward.AccessKey) bool {
	to := LayoutFor(key)
	return LayoutOf(s) != to || s.Annotations[AnnotationDataKeys] != to.String()
}

// ApplyLayout moves the key's three entries of s to the names key asks for
// and reports whether anything changed. The values are kept: the key is
// not re-issued. Entries that others added are left alone.
func ApplyLayout(s *corev1.Secret, key *keyward.AccessKey) bool {
	if !LayoutChanged(s, key) {
		return false
	}
	from, to := LayoutOf(s), LayoutFor(key)
	values := [3][]byte{s.Data[from.AccessKey], s.Data[from.KeyID], s.Data[from.Application]}
	for _, n := range []string{from.AccessKey, from.KeyID, from.Application} {
		delete(s.Data, n)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[to.AccessKey], s.Data[to.KeyID], s.Data[to.Application] = values[0], values[1], values[2]
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationDataKeys] = to.String()
	return true
}
