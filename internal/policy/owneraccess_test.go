package policy

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

func ownedKey(name, owner string) keyward.AccessKey {
	return keyward.AccessKey{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)},
		Spec:       keyward.AccessKeySpec{Application: "app", Owner: owner},
	}
}

// controlledSecret is a Secret named name that key controls.
func controlledSecret(name string, key keyward.AccessKey) corev1.Secret {
	return corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, OwnerReferences: []metav1.OwnerReference{{
		APIVersion: keyward.GroupVersion.String(), Kind: "AccessKey", Name: key.Name, UID: key.UID, Controller: ptr.To(true),
	}}}}
}

func TestOwnerGrants(t *testing.T) {
	alice1, alice2 := ownedKey("a1", "alice"), ownedKey("a2", "alice")
	bob := ownedKey("b1", "bob")
	nobody := ownedKey("n1", "")
	deleting := ownedKey("d1", "alice")
	deleting.DeletionTimestamp = &metav1.Time{Time: t0}

	notController := controlledSecret("loose", alice1)
	notController.OwnerReferences[0].Controller = nil
	otherKind := controlledSecret("cm-like", alice1)
	otherKind.OwnerReferences[0].Kind = "Application"
	otherGroup := controlledSecret("other-group", alice1)
	otherGroup.OwnerReferences[0].APIVersion = "evil.example/v1"
	staleUID := controlledSecret("stale", alice1)
	staleUID.OwnerReferences[0].UID = "uid-of-a-deleted-a1"
	renamed := controlledSecret("renamed", alice1)
	renamed.OwnerReferences[0].Name = "b1" // right UID, wrong name: not trusted
	goingAway := controlledSecret("going", alice1)
	goingAway.DeletionTimestamp = &metav1.Time{Time: t0}

	tests := []struct {
		name    string
		keys    []keyward.AccessKey
		secrets []corev1.Secret
		want    map[string][]string // owner -> Secret names
	}{
		{name: "no keys", want: map[string][]string{}},
		{name: "keys without Secrets give nothing (never an empty resourceNames)",
			keys: []keyward.AccessKey{alice1, bob}, want: map[string][]string{}},
		{name: "each owner gets their own keys' Secrets",
			keys:    []keyward.AccessKey{alice1, alice2, bob},
			secrets: []corev1.Secret{controlledSecret("a1", alice1), controlledSecret("custom-name", alice2), controlledSecret("b1", bob)},
			want:    map[string][]string{"alice": {"a1", "custom-name"}, "bob": {"b1"}}},
		{name: "a key without owner gives no one access",
			keys: []keyward.AccessKey{nobody}, secrets: []corev1.Secret{controlledSecret("n1", nobody)}, want: map[string][]string{}},
		{name: "a key being deleted takes its access with it at once",
			keys:    []keyward.AccessKey{alice1, deleting},
			secrets: []corev1.Secret{controlledSecret("a1", alice1), controlledSecret("d1", deleting)},
			want:    map[string][]string{"alice": {"a1"}}},
		{name: "only Secrets the key controls count, not look-alikes or stale ones",
			keys:    []keyward.AccessKey{alice1, bob},
			secrets: []corev1.Secret{notController, otherKind, otherGroup, staleUID, renamed, goingAway, {ObjectMeta: metav1.ObjectMeta{Name: "a1"}}},
			want:    map[string][]string{}},
		{name: "a Secret of a key that is gone counts for no one",
			keys: []keyward.AccessKey{bob}, secrets: []corev1.Secret{controlledSecret("a1", alice1)}, want: map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string][]string{}
			for _, g := range OwnerGrants(tt.keys, tt.secrets) {
				if len(g.SecretNames) == 0 {
					t.Fatalf("grant for %q with no Secret names would grant every Secret", g.Owner)
				}
				if g.Name != OwnerAccessName(g.Owner) || !reflect.DeepEqual(g.Subject, OwnerSubject(g.Owner)) {
					t.Fatalf("grant %+v", g)
				}
				r := g.Rules()
				if len(r) != 1 || !reflect.DeepEqual(r[0].Verbs, []string{"get"}) || !reflect.DeepEqual(r[0].Resources, []string{"secrets"}) ||
					!reflect.DeepEqual(r[0].APIGroups, []string{""}) || !reflect.DeepEqual(r[0].ResourceNames, g.SecretNames) {
					t.Fatalf("rules %+v: want get on exactly the Secrets %v", r, g.SecretNames)
				}
				got[g.Owner] = g.SecretNames
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOwnerGrantsOwnerReferencesAndOrder(t *testing.T) {
	a1, a2 := ownedKey("a1", "alice"), ownedKey("a2", "alice")
	z := ownedKey("z", "zed")
	grants := OwnerGrants([]keyward.AccessKey{z, a2, a1},
		[]corev1.Secret{controlledSecret("z", z), controlledSecret("a2", a2), controlledSecret("a1", a1)})
	if len(grants) != 2 || grants[0].Name > grants[1].Name {
		t.Fatalf("grants not sorted by name: %+v", grants)
	}
	for _, g := range grants {
		if g.Owner != "alice" {
			continue
		}
		if len(g.Keys) != 2 || g.Keys[0].UID != "uid-a1" || g.Keys[1].UID != "uid-a2" || g.Keys[0].Controller != nil {
			t.Fatalf("owner references %+v: want both keys, sorted, none a controller", g.Keys)
		}
	}
}

func TestOwnerAccessNamesAndSubjects(t *testing.T) {
	long := strings.Repeat("x", 5000)
	for _, owner := range []string{"alice", "Alice", "dana@example.com", "system:serviceaccount:ci:deployer",
		"system:serviceaccount:ci", "system:admin", "../../etc", "ünïcødé ✓", long, "a\x00b"} {
		n := OwnerAccessName(owner)
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Errorf("name for %q is no DNS label: %v", owner, errs)
		}
	}
	if OwnerAccessName("alice") == OwnerAccessName("Alice") {
		t.Fatal("owners differing in case share a Role")
	}
	tests := []struct {
		owner string
		want  rbacv1.Subject
	}{
		{"alice", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"}},
		{"dana@example.com", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "dana@example.com"}},
		{"system:serviceaccount:ci:deployer", rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ci", Name: "deployer"}},
		{"system:serviceaccount:ci:deploy.er-1", rbacv1.Subject{Kind: "ServiceAccount", Namespace: "ci", Name: "deploy.er-1"}},
		// Malformed: stays a User of exactly that name, which no ServiceAccount is.
		{"system:serviceaccount:ci", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:ci"}},
		{"system:serviceaccount:ci:a:b", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:ci:a:b"}},
		{"system:serviceaccount::x", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount::x"}},
		{"system:serviceaccount:CI:x", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:CI:x"}},
		{"system:serviceaccounts:ci", rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts:ci"}},
	}
	for _, tt := range tests {
		if got := OwnerSubject(tt.owner); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("OwnerSubject(%q) = %+v, want %+v", tt.owner, got, tt.want)
		}
	}
}
