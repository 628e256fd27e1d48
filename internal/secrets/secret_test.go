package secrets

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/keyformat"
	"keyward.dev/keyward/internal/policy"
)

func issuedKey(t *testing.T) (*keyward.AccessKey, keyformat.Key) {
	t.Helper()
	m, err := keyformat.Generate()
	if err != nil {
		t.Fatal(err)
	}
	k := &keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: types.UID("key-uid"),
			Labels: map[string]string{"argocd.argoproj.io/instance": "shop"}},
		Spec: keyward.AccessKeySpec{Application: "portal", SecretTemplate: &keyward.SecretTemplate{
			Labels:      map[string]string{"team": "web", LabelManagedBy: "someone-else"},
			Annotations: map[string]string{"note": "mounted by web"},
		}},
		Status: keyward.AccessKeyStatus{KeyID: m.ID, SecretHash: keyformat.HashSecret(m.Secret)},
	}
	return k, m
}

func controlledBy(s *corev1.Secret, k *keyward.AccessKey) *corev1.Secret {
	s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "keyward.dev/v1alpha1", Kind: "AccessKey",
		Name: k.Name, UID: k.UID, Controller: ptr.To(true)}}
	return s
}

func TestDesired(t *testing.T) {
	k, m := issuedKey(t)
	s := Desired(k, m)
	if s.Name != "web" || s.Namespace != "shop" || s.Type != SecretType {
		t.Fatalf("name/namespace/type: %s/%s/%s", s.Namespace, s.Name, s.Type)
	}
	if string(s.Data[DataAccessKey]) != m.Plaintext() || string(s.Data[DataKeyID]) != m.ID || string(s.Data[DataApplication]) != "portal" {
		t.Fatal("data does not hold the key, its ID and the application")
	}
	if s.Labels[LabelManagedBy] != ManagedByValue || s.Labels[LabelAccessKey] != "web" || s.Labels["team"] != "web" {
		t.Fatalf("labels %v: Keyward's labels must win over the template's", s.Labels)
	}
	if _, copied := s.Labels["argocd.argoproj.io/instance"]; copied {
		t.Fatal("the AccessKey's own labels were copied onto the Secret")
	}
	if s.Annotations["note"] != "mounted by web" {
		t.Fatalf("annotations %v", s.Annotations)
	}
	k.Spec.SecretTemplate.Name = "custom"
	if Desired(k, m).Name != "custom" {
		t.Fatal("secretTemplate.name is not honoured")
	}
}

func TestApplyMetadataReportsChangesAndKeepsOthers(t *testing.T) {
	k, m := issuedKey(t)
	s := Desired(k, m)
	s.Labels["added-by-someone"] = "x"
	if ApplyMetadata(s, k) {
		t.Fatal("nothing to change, yet a change was reported")
	}
	delete(s.Labels, LabelAccessKey)
	if !ApplyMetadata(s, k) || s.Labels[LabelAccessKey] != "web" || s.Labels["added-by-someone"] != "x" {
		t.Fatalf("labels %v", s.Labels)
	}
}

func TestInspect(t *testing.T) {
	k, m := issuedKey(t)
	if Inspect(nil, k) != policy.SecretMissing {
		t.Fatal("no Secret is not missing")
	}
	if got := Inspect(Digest(Desired(k, m)), k); got != policy.SecretIntact {
		t.Fatalf("the issued Secret is not intact: %v", got)
	}
	edits := map[string]func(*corev1.Secret){
		"key replaced by hand":    func(s *corev1.Secret) { s.Data[DataAccessKey] = []byte("kw_edited_by_hand") },
		"another valid key":       func(s *corev1.Secret) { o, _ := keyformat.Generate(); s.Data[DataAccessKey] = []byte(o.Plaintext()) },
		"keyId edited":            func(s *corev1.Secret) { s.Data[DataKeyID] = []byte("other") },
		"application edited":      func(s *corev1.Secret) { s.Data[DataApplication] = []byte("other") },
		"accessKey entry removed": func(s *corev1.Secret) { delete(s.Data, DataAccessKey) },
		"same ID, another secret part": func(s *corev1.Secret) {
			o, _ := keyformat.Generate()
			s.Data[DataAccessKey] = []byte(keyformat.Key{ID: m.ID, Secret: o.Secret}.Plaintext())
		},
	}
	for name, edit := range edits {
		s := controlledBy(Desired(k, m), k)
		edit(s)
		if got := Inspect(Digest(s), k); got != policy.SecretTampered {
			t.Errorf("%s: got %v, want tampered", name, got)
		}
	}
}

func TestInspectOwnership(t *testing.T) {
	k, m := issuedKey(t)
	if got := Inspect(Digest(controlledBy(Desired(k, m), k)), k); got != policy.SecretIntact {
		t.Fatalf("the controlled Secret: %v", got)
	}
	if got := Inspect(Digest(Desired(k, m)), k); got != policy.SecretIntact {
		t.Fatalf("a Secret whose owner reference was stripped is not taken back: %v", got)
	}
	other := &keyward.AccessKey{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "other-uid"}}
	if got := Inspect(Digest(controlledBy(Desired(k, m), other)), k); got != policy.SecretForeign {
		t.Fatalf("a Secret controlled by another object: %v", got)
	}
	// A look-alike: Keyward's labels and the public key ID, other material, no controller.
	o, _ := keyformat.Generate()
	lookAlike := Desired(k, o)
	lookAlike.Data[DataKeyID] = []byte(m.ID)
	if got := Inspect(Digest(lookAlike), k); got != policy.SecretForeign {
		t.Fatalf("a look-alike was used: %v", got)
	}
	edited := controlledBy(Desired(k, o), k)
	if got := Inspect(Digest(edited), k); got != policy.SecretTampered {
		t.Fatalf("the key's own edited Secret: %v", got)
	}
	terminating := controlledBy(Desired(k, m), k)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if got := Inspect(Digest(terminating), k); got != policy.SecretTampered {
		t.Fatalf("a Secret being deleted is not the key's Secret any more: %v", got)
	}
	terminating.Data = nil
	if got := Inspect(Digest(terminating), k); got != policy.SecretMissing {
		t.Fatalf("an emptied Secret being deleted: %v", got)
	}
	neverIssued := k.DeepCopy()
	neverIssued.Status = keyward.AccessKeyStatus{}
	if got := Inspect(Digest(Desired(k, m)), neverIssued); got != policy.SecretForeign {
		t.Fatalf("an uncontrolled Secret was claimed by a key never issued: %v", got)
	}
}

func TestHoldsMaterialOf(t *testing.T) {
	k, m := issuedKey(t)
	stripped := Desired(k, m)
	delete(stripped.Labels, LabelManagedBy)
	if !HoldsMaterialOf(Digest(stripped), k) {
		t.Fatal("a Secret stripped of its owner reference and a label escapes destruction")
	}
	onlyID := &corev1.Secret{Data: map[string][]byte{DataKeyID: []byte(m.ID)}}
	if !HoldsMaterialOf(Digest(onlyID), k) {
		t.Fatal("a Secret holding the key ID escapes destruction")
	}
	if !HoldsMaterialOf(Digest(controlledBy(&corev1.Secret{}, k)), k) {
		t.Fatal("a controlled Secret escapes destruction")
	}
	if HoldsMaterialOf(Digest(&corev1.Secret{Data: map[string][]byte{DataKeyID: []byte("other")}}), k) {
		t.Fatal("a stranger's Secret would be destroyed")
	}
}

// The cache holds no value of a key's Secret, only digests, and the
// digested Secret still tells intact from edited.
func TestCacheTransformKeepsNoValue(t *testing.T) {
	k, m := issuedKey(t)
	s := controlledBy(Desired(k, m), k)
	s.Annotations[lastAppliedAnnotation] = `{"data":{"accessKey":"` + m.Plaintext() + `"}}`
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "keyward"}}
	values := map[string]string{}
	for n, v := range s.Data {
		values[n] = string(v)
	}
	obj, err := CacheTransform(s)
	if err != nil {
		t.Fatal(err)
	}
	cached := obj.(*corev1.Secret)
	for n, v := range cached.Data {
		if string(v) == values[n] || strings.Contains(string(v), m.Secret) {
			t.Errorf("entry %s holds its value", n)
		}
		if _, _, isKey := keyformat.ParseDigest(string(v)); !isKey && !strings.HasPrefix(string(v), keyformat.HashPrefix) {
			t.Errorf("entry %s holds no digest", n)
		}
	}
	if _, ok := cached.Annotations[lastAppliedAnnotation]; ok || cached.ManagedFields != nil {
		t.Fatal("the last-applied annotation or managedFields were kept")
	}
	if len(cached.Data) != 3 || cached.Labels[LabelAccessKey] != k.Name || !metav1.IsControlledBy(cached, k) {
		t.Fatal("the transform lost what the manager reads: entries, labels, owner references")
	}
	if Inspect(cached, k) != policy.SecretIntact {
		t.Fatal("the digested Secret is not intact")
	}
	again, _ := CacheTransform(cached.DeepCopy())
	if !reflect.DeepEqual(again, cached) {
		t.Fatal("transforming a transformed Secret changed it: client-go may transform an object twice")
	}
	if Inspect(Desired(k, m), k) != policy.SecretIntact || !HoldsMaterialOf(Desired(k, m), k) {
		t.Fatal("a Secret as the API server holds it is read through a digested copy")
	}
	if other, ok := CacheTransform("not a Secret"); ok != nil || other != "not a Secret" {
		t.Fatal("other objects must pass unchanged")
	}
}

// A value that looks like a digest is digested like any other: nobody can
// make an edited Secret look intact by writing the public key ID and
// secret hash into it.
func TestForgedDigestIsTampered(t *testing.T) {
	k, m := issuedKey(t)
	s := controlledBy(Desired(k, m), k)
	s.Data[DataAccessKey] = []byte(m.Digest())
	if got := Inspect(s, k); got != policy.SecretTampered {
		t.Fatalf("a Secret holding the digest of its key instead of the key: %v", got)
	}
}

func TestLayoutChanged(t *testing.T) {
	k, m := issuedKey(t)
	s := Desired(k, m)
	if LayoutChanged(s, k) {
		t.Fatal("a fresh Secret has the layout its key asks for")
	}
	k.Spec.SecretTemplate.DataKeys = &keyward.SecretDataKeys{AccessKey: "token"}
	if !LayoutChanged(s, k) || !ApplyLayout(s, k) || LayoutChanged(s, k) || string(s.Data["token"]) != m.Plaintext() {
		t.Fatal("the entries were not moved to the names asked for")
	}
}
