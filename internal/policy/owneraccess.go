package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

// A key's owner (spec.owner, stamped by the admission policy
// keyward-stamp-owner) may read the Secrets of their own keys and no other
// Secret: per owner and namespace, the manager keeps a Role with `get` on
// `secrets` restricted by resourceNames to those Secrets, and a RoleBinding
// of it to the owner (docs/security.md, "The creator's own key").

// OwnerAccessPrefix starts the name of every owner's Role and RoleBinding.
const OwnerAccessPrefix = "keyward-owner-"

// LabelOwnerAccess marks the Roles and RoleBindings the manager keeps for
// owners; its value is the owner's hash (OwnerHash). The manager's cache
// holds only Roles and RoleBindings with this label.
const LabelOwnerAccess = "keyward.dev/owner-access"

// AnnotationOwner on an owner's Role and RoleBinding holds the owner's name
// as it is (any string: a label value could not hold it).
const AnnotationOwner = "keyward.dev/owner"

// ServiceAccountUserPrefix starts the user name of every ServiceAccount.
const ServiceAccountUserPrefix = "system:serviceaccount:"

// OwnerHash is a DNS-label-safe digest of an owner name: 32 hex digits
// (128 bits) of its SHA-256, so two owners never share a Role.
func OwnerHash(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(sum[:16])
}

// OwnerAccessName is the name of the Role and RoleBinding of an owner: a
// valid DNS label whatever the owner's name holds.
func OwnerAccessName(owner string) string {
	return OwnerAccessPrefix + OwnerHash(owner)
}

// OwnerSubject is the RBAC subject that a request by the user owner
// matches: a ServiceAccount for a well-formed
// `system:serviceaccount:<namespace>:<name>`, otherwise a User with that
// exact name (a user name that only looks like a ServiceAccount's still
// matches only that user).
func OwnerSubject(owner string) rbacv1.Subject {
	if rest, ok := strings.CutPrefix(owner, ServiceAccountUserPrefix); ok {
		ns, name, ok := strings.Cut(rest, ":")
		if ok && len(validation.IsDNS1123Label(ns)) == 0 && len(validation.IsDNS1123Subdomain(name)) == 0 {
			return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
		}
	}
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: owner}
}

// OwnerGrant is the access one owner should have in a namespace.
type OwnerGrant struct {
	Owner string
	// Name of the Role and the RoleBinding (OwnerAccessName).
	Name    string
	Subject rbacv1.Subject
	// SecretNames are the Secrets the owner may get, sorted; never empty
	// (a rule with no resourceNames would grant every Secret).
	SecretNames []string
	// Keys are the owner's keys that hold those Secrets, by name, for the
	// owner references (so garbage collection removes the Role and
	// RoleBinding with the last of them); sorted by name.
	Keys []metav1.OwnerReference
}

// Rules are the Role's rules: get on exactly the grant's Secrets.
func (g OwnerGrant) Rules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{{
		APIGroups:     []string{""},
		Resources:     []string{"secrets"},
		Verbs:         []string{"get"},
		ResourceNames: slices.Clone(g.SecretNames),
	}}
}

// OwnerGrants decides, for one namespace, which owners may read which
// Secrets: a key's owner may get each Secret the key controls (its owner
// reference with controller: true names the key's UID). Only the Secrets
// matter, not spec.secretTemplate.name, so naming a stranger's Secret in a
// key grants nothing. Keys without an owner and keys being deleted give no
// access; an owner whose keys hold no Secret (none issued yet, all
// revoked) gets no grant at all. The result is sorted by Role name.
func OwnerGrants(keys []keyward.AccessKey, secrets []corev1.Secret) []OwnerGrant {
	byUID := make(map[string]*keyward.AccessKey, len(keys))
	for i := range keys {
		k := &keys[i]
		if k.Spec.Owner == "" || !k.DeletionTimestamp.IsZero() || k.UID == "" {
			continue
		}
		byUID[string(k.UID)] = k
	}
	grants := map[string]*OwnerGrant{}
	for i := range secrets {
		s := &secrets[i]
		if !s.DeletionTimestamp.IsZero() {
			continue
		}
		ref, ok := ControllingKey(s)
		if !ok {
			continue
		}
		k, ok := byUID[string(ref.UID)]
		if !ok || k.Name != ref.Name {
			continue
		}
		g, ok := grants[k.Spec.Owner]
		if !ok {
			g = &OwnerGrant{Owner: k.Spec.Owner, Name: OwnerAccessName(k.Spec.Owner), Subject: OwnerSubject(k.Spec.Owner)}
			grants[k.Spec.Owner] = g
		}
		if !slices.Contains(g.SecretNames, s.Name) {
			g.SecretNames = append(g.SecretNames, s.Name)
		}
		if !slices.ContainsFunc(g.Keys, func(r metav1.OwnerReference) bool { return r.UID == k.UID }) {
			g.Keys = append(g.Keys, metav1.OwnerReference{
				APIVersion: keyward.GroupVersion.String(), Kind: "AccessKey", Name: k.Name, UID: k.UID,
			})
		}
	}
	out := make([]OwnerGrant, 0, len(grants))
	for _, g := range grants {
		slices.Sort(g.SecretNames)
		slices.SortFunc(g.Keys, func(a, b metav1.OwnerReference) int { return strings.Compare(a.Name, b.Name) })
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b OwnerGrant) int { return strings.Compare(a.Name, b.Name) })
	return out
}
