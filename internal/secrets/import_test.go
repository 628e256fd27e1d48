package secrets

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

// A key restored without status, and the Secret restored beside it
// without owner references, as Velero restores them.
func restored(t *testing.T) (*keyward.AccessKey, *corev1.Secret) {
	t.Helper()
	k, m := issuedKey(t)
	s := Desired(k, m)
	k.UID = "new-uid"
	k.Status = keyward.AccessKeyStatus{}
	k.Annotations = map[string]string{keyward.ImportKeyIDAnnotation: m.ID, keyward.ImportSecretHashAnnotation: keyformat.HashSecret(m.Secret)}
	return k, s
}

func TestImportable(t *testing.T) {
	other, _ := keyformat.Generate()
	cases := []struct {
		name   string
		change func(*keyward.AccessKey, *corev1.Secret)
		want   policy.SecretState
	}{
		{"holds the named key", func(*keyward.AccessKey, *corev1.Secret) {}, policy.SecretImportable},
		{"already adopted by this key (a stop before the status write)", func(k *keyward.AccessKey, s *corev1.Secret) { controlledBy(s, k) }, policy.SecretImportable},
		{"with renamed entries", func(k *keyward.AccessKey, s *corev1.Secret) {
			k.Spec.SecretTemplate.DataKeys = &keyward.SecretDataKeys{AccessKey: "API_KEY"}
			s.Data["API_KEY"] = s.Data[DataAccessKey]
			delete(s.Data, DataAccessKey)
			s.Annotations[AnnotationDataKeys] = LayoutFor(k).String()
		}, policy.SecretImportable},
		{"no import asked: a look-alike", func(k *keyward.AccessKey, _ *corev1.Secret) { k.Annotations = nil }, policy.SecretForeign},
		{"other material under the named ID", func(_ *keyward.AccessKey, s *corev1.Secret) {
			s.Data[DataAccessKey] = []byte(other.Plaintext())
			s.Data[DataKeyID] = []byte(other.ID)
		}, policy.SecretForeign},
		{"the named ID, another secret part", func(k *keyward.AccessKey, _ *corev1.Secret) {
			k.Annotations[keyward.ImportSecretHashAnnotation] = keyformat.HashSecret(other.Secret)
		}, policy.SecretForeign},
		{"only the key ID named", func(k *keyward.AccessKey, _ *corev1.Secret) {
			delete(k.Annotations, keyward.ImportSecretHashAnnotation)
		}, policy.SecretForeign},
		{"keyId entry disagrees", func(_ *keyward.AccessKey, s *corev1.Secret) { s.Data[DataKeyID] = []byte(other.ID) }, policy.SecretForeign},
		{"another application's", func(k *keyward.AccessKey, _ *corev1.Secret) { k.Spec.Application = "billing" }, policy.SecretForeign},
		{"controlled by another object", func(_ *keyward.AccessKey, s *corev1.Secret) {
			controlledBy(s, &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "old-uid"}})
		}, policy.SecretForeign},
		{"being deleted", func(_ *keyward.AccessKey, s *corev1.Secret) { now := metav1.Now(); s.DeletionTimestamp = &now }, policy.SecretForeign},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, s := restored(t)
			c.change(k, s)
			if got := Inspect(s, k); got != c.want {
				t.Fatalf("Inspect = %d, want %d", got, c.want)
			}
		})
	}
}

func TestAdoptedSecretIsIntactOnceRecorded(t *testing.T) {
	k, s := restored(t)
	k.Spec.SecretTemplate.DataKeys = &keyward.SecretDataKeys{AccessKey: "API_KEY"}
	delete(s.Labels, LabelAccessKey)
	Adopt(s, k)
	controlledBy(s, k)
	if s.Labels[LabelAccessKey] != "web" || s.Annotations[AnnotationKeyID] != k.Annotations[keyward.ImportKeyIDAnnotation] || len(s.Data["API_KEY"]) == 0 {
		t.Fatalf("adopted Secret: labels %v annotations %v entries %d", s.Labels, s.Annotations, len(s.Data))
	}
	// What the plan records for an import is what Inspect then finds intact.
	k.Status.IssuedAt = &metav1.Time{}
	k.Status.KeyID, k.Status.SecretHash = k.Annotations[keyward.ImportKeyIDAnnotation], k.Annotations[keyward.ImportSecretHashAnnotation]
	if got := Inspect(s, k); got != policy.SecretIntact {
		t.Fatalf("Inspect after adoption = %d, want intact", got)
	}
}
