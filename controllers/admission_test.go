package controllers_test

import (
	"slices"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/health"
)

// userWithRole binds the shipped ClusterRole to user in ns and returns a
// client that impersonates user.
func userWithRole(ns, user, clusterRole string) client.Client {
	GinkgoHelper()
	Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + clusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	})).To(Succeed())
	c, err := env.ClientAs(user)
	Expect(err).NotTo(HaveOccurred())
	// RBAC is read from the API server's informer; wait until the binding counts.
	Eventually(func() error {
		var keys keyward.AccessKeyList
		return c.List(ctx, &keys, client.InNamespace(ns))
	}, timeout, interval).Should(Succeed())
	return c
}

func unowned(ns, name, app string) *keyward.AccessKey {
	return buildKey(ns, name, app, ownedBy(""))
}

var _ = Describe("Roles and admission policies (no webhook server)", func() {
	var ns string
	var developer, admin, viewer client.Client

	BeforeEach(func() {
		ns = newTenant()
		newApp(ns, "payments", withMaxKeys(10))
		developer = userWithRole(ns, "dana", "keyward-developer")
		admin = userWithRole(ns, "tess", "keyward-tenant-admin")
		viewer = userWithRole(ns, "vic", "keyward-viewer")
	})

	It("stamps spec.owner with the creating user when it is empty", func() {
		key := unowned(ns, "dana-key", "payments")
		Expect(developer.Create(ctx, key)).To(Succeed())
		Expect(get(key).Spec.Owner).To(Equal("dana"))
		eventuallyPhase(key, keyward.PhaseActive)

		byAdmin := unowned(ns, "tess-key", "payments")
		Expect(admin.Create(ctx, byAdmin)).To(Succeed())
		Expect(get(byAdmin).Spec.Owner).To(Equal("tess"))
	})

	It("lets a developer create, edit and delete own keys, but not revoke them", func() {
		key := unowned(ns, "dana-key", "payments")
		Expect(developer.Create(ctx, key)).To(Succeed())
		eventuallyPhase(key, keyward.PhaseActive)

		Expect(updateAs(developer, key, func(k *keyward.AccessKey) { k.Spec.State = keyward.StateInactive })).To(Succeed())
		eventuallyPhase(key, keyward.PhaseInactive)

		err := updateAs(developer, key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("needs the revoke verb on accesskeys"))
		Expect(err.Error()).To(ContainSubstring("user dana"))
		Expect(get(key).Spec.Revoked).To(BeFalse())

		preRevoked := unowned(ns, "born-revoked", "payments")
		preRevoked.Spec.Revoked = true
		Expect(apierrors.IsForbidden(developer.Create(ctx, preRevoked))).To(BeTrue())

		Expect(developer.Delete(ctx, key)).To(Succeed())
	})

	It("keeps a developer from creating a key owned by someone else or handing one over", func() {
		err := developer.Create(ctx, buildKey(ns, "for-erin", "payments", ownedBy("erin")))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.owner may name only yourself (dana)"))
		Expect(err.Error()).To(ContainSubstring("assign-owner"))

		own := buildKey(ns, "mine", "payments", ownedBy("dana"))
		Expect(developer.Create(ctx, own)).To(Succeed(), "naming yourself is fine")
		err = updateAs(developer, own, func(k *keyward.AccessKey) { k.Spec.Owner = "erin" })
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("changing the owner of an AccessKey (from dana to erin) needs the assign-owner verb"))

		// Nor can a developer take over a colleague's key by naming themself.
		erins := buildKey(ns, "erins", "payments", ownedBy("erin"))
		Expect(admin.Create(ctx, erins)).To(Succeed())
		err = updateAs(developer, erins, func(k *keyward.AccessKey) { k.Spec.Owner = "dana" })
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(get(erins).Spec.Owner).To(Equal("erin"))
	})

	It("lets a tenant admin revoke, irreversibly, and assign keys to others", func() {
		key := unowned(ns, "dana-key", "payments")
		Expect(developer.Create(ctx, key)).To(Succeed())
		eventuallyPhase(key, keyward.PhaseActive)

		Expect(updateAs(admin, key, func(k *keyward.AccessKey) { k.Spec.Revoked = true })).To(Succeed())
		eventuallyPhase(key, keyward.PhaseRevoked, keyward.ReasonRevoked)

		// The developer may still edit the revoked key's description.
		Expect(updateAs(developer, key, func(k *keyward.AccessKey) { k.Spec.Description = "leaked on 2026-11-24" })).To(Succeed())

		// Not even the tenant admin can take a revocation back.
		err := updateAs(admin, key, func(k *keyward.AccessKey) { k.Spec.Revoked = false })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("revocation is irreversible"))

		Expect(admin.Create(ctx, buildKey(ns, "for-erin", "payments", ownedBy("erin")))).To(Succeed())
	})

	It("lets a developer delete only their own keys; deleting a colleague's needs the revoke verb", func() {
		mine := unowned(ns, "dana-key", "payments")
		Expect(developer.Create(ctx, mine)).To(Succeed())
		colleagues := newKey(ns, "ada-key", "payments", ownedBy("ada"))
		eventuallyPhase(colleagues, keyward.PhaseActive)

		err := developer.Delete(ctx, colleagues)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("may delete only their own keys"))
		Expect(get(colleagues).DeletionTimestamp).To(BeNil())
		err = developer.DeleteAllOf(ctx, &keyward.AccessKey{}, client.InNamespace(ns))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "deletecollection is checked key by key, got %v", err)

		Expect(developer.Delete(ctx, mine)).To(Succeed())
		Expect(admin.Delete(ctx, colleagues)).To(Succeed())
	})

	It("keeps TenantSettings and Applications to the tenant admin; viewers only read", func() {
		ts := &keyward.TenantSettings{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
		err := updateAs(developer, ts, func(t *keyward.TenantSettings) { t.Spec.APIKeysEnabled = ptr.To(false) })
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(apierrors.IsForbidden(developer.Create(ctx, &keyward.Application{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}}))).To(BeTrue())

		Expect(updateAs(admin, ts, func(t *keyward.TenantSettings) { t.Spec.MaxKeysPerOwner = 3 })).To(Succeed())
		Expect(admin.Create(ctx, &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admins"}})).To(Succeed())

		var keys keyward.AccessKeyList
		Expect(viewer.List(ctx, &keys, client.InNamespace(ns))).To(Succeed())
		Expect(apierrors.IsForbidden(viewer.Create(ctx, unowned(ns, "vic-key", "payments")))).To(BeTrue())
	})
})

var _ = Describe("The shipped roles aggregate into Kubernetes' built-in roles", func() {
	It("gives edit the developer's rights and admin the revoke verb", func() {
		hasRule := func(role, resource, verb string) func() bool {
			return func() bool {
				var cr rbacv1.ClusterRole
				if err := k8s.Get(ctx, client.ObjectKey{Name: role}, &cr); err != nil {
					return false
				}
				for _, r := range cr.Rules {
					if slices.Contains(r.APIGroups, "keyward.dev") && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
						return true
					}
				}
				return false
			}
		}
		Eventually(hasRule("view", "accesskeys", "list"), timeout, interval).Should(BeTrue())
		Eventually(hasRule("edit", "accesskeys", "create"), timeout, interval).Should(BeTrue())
		Eventually(hasRule("admin", "accesskeys", "revoke"), timeout, interval).Should(BeTrue())
		Expect(hasRule("edit", "accesskeys", "revoke")()).To(BeFalse())
		Expect(hasRule("view", "accesskeys", "create")()).To(BeFalse())
	})
})

var _ = Describe("The manager knows whether the admission policies are installed", Serial, func() {
	It("reports them installed, and missing once a binding is gone", func() {
		checker := &health.AdmissionPolicies{Reader: k8s, Log: GinkgoLogr}
		checker.Check(ctx)
		installed, known := checker.Installed()
		Expect(known && installed).To(BeTrue(), "missing: %v", checker.Missing())

		binding := &admissionv1.ValidatingAdmissionPolicyBinding{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: health.PolicyDeleteOwnKeys}, binding)).To(Succeed())
		Expect(k8s.Delete(ctx, binding)).To(Succeed())
		DeferCleanup(func() {
			restored := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: binding.Name}, Spec: binding.Spec}
			Expect(k8s.Create(ctx, restored)).To(Succeed())
		})
		checker.Check(ctx)
		installed, known = checker.Installed()
		Expect(known).To(BeTrue())
		Expect(installed).To(BeFalse())
		Expect(checker.Missing()).To(ConsistOf("ValidatingAdmissionPolicyBinding " + health.PolicyDeleteOwnKeys))
	})
})
