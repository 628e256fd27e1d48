package controllers_test

import (
	"errors"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	keyward "keyward.dev/keyward/api/v1alpha1"
	"keyward.dev/keyward/internal/policy"
	"keyward.dev/keyward/internal/secrets"
)

// readSecretAs gets the Secret of key as c, and returns the error (nil when
// it could read it). It never prints the Secret's contents.
func readSecretAs(c client.Client, key *keyward.AccessKey) error {
	var s corev1.Secret
	err := c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.SecretName()}, &s)
	if err == nil {
		m, ok := secrets.Material(&s)
		current := &keyward.AccessKey{}
		if !ok || (k8s.Get(ctx, client.ObjectKeyFromObject(key), current) == nil && m.ID != current.Status.KeyID) {
			return errNotTheKey
		}
		seenKeys.Lock()
		seenKeys.keys[m.Plaintext()] = true
		seenKeys.keys[m.Secret] = true
		seenKeys.Unlock()
	}
	return err
}

var errNotTheKey = errors.New("the Secret does not hold the key's current material")

var _ = Describe("The creator's own key: an owner reads the Secrets of their keys and no one else's", func() {
	var ns string
	var alice, bob client.Client

	BeforeEach(func() {
		ns = newTenant()
		newApp(ns, "payments", withMaxKeys(10))
		alice = userWithRole(ns, "alice", "keyward-developer")
		bob = userWithRole(ns, "bob", "keyward-developer")
	})

	It("lets alice read her key's Secret, refuses bob (403), and takes alice's access away with her key", func() {
		key := unowned(ns, "alice-key", "payments")
		Expect(alice.Create(ctx, key)).To(Succeed())
		Expect(get(key).Spec.Owner).To(Equal("alice"))
		eventuallyPhase(key, keyward.PhaseActive)

		Eventually(func() error { return readSecretAs(alice, key) }, timeout, interval).Should(Succeed())

		err := readSecretAs(bob, key)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "bob reading alice's Secret: got %v", err)

		// Alice's right is get on that one name: no list, no other Secret.
		var list corev1.SecretList
		Expect(apierrors.IsForbidden(alice.List(ctx, &list, client.InNamespace(ns)))).To(BeTrue())
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-password"}, StringData: map[string]string{"p": "x"}}
		Expect(k8s.Create(ctx, other)).To(Succeed())
		Expect(apierrors.IsForbidden(alice.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{}))).To(BeTrue())

		// Bob's own key is his to read, not alice's.
		bobs := unowned(ns, "bob-key", "payments")
		Expect(bob.Create(ctx, bobs)).To(Succeed())
		eventuallyPhase(bobs, keyward.PhaseActive)
		Eventually(func() error { return readSecretAs(bob, bobs) }, timeout, interval).Should(Succeed())
		Expect(apierrors.IsForbidden(readSecretAs(alice, bobs))).To(BeTrue())

		// The Role is exactly get on alice's Secret, bound to the user alice.
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: policy.OwnerAccessName("alice")}}
		Expect(get(role).Rules).To(Equal([]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"},
			Verbs: []string{"get"}, ResourceNames: []string{"alice-key"}}}))
		binding := get(&rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta})
		Expect(binding.Subjects).To(Equal([]rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: "alice"}}))
		// The binding is owned by the Role (which the keys own), so the
		// garbage collector removes it after the Role.
		Expect(binding.OwnerReferences).To(ConsistOf(HaveField("UID", get(role).UID)))

		// A second key of alice's joins the same Role; the binding is not
		// written again.
		second := unowned(ns, "alice-second", "payments")
		Expect(alice.Create(ctx, second)).To(Succeed())
		eventuallyPhase(second, keyward.PhaseActive)
		Eventually(func() error { return readSecretAs(alice, second) }, timeout, interval).Should(Succeed())
		Expect(get(role).OwnerReferences).To(HaveLen(2))
		Expect(get(&rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta}).ResourceVersion).To(Equal(binding.ResourceVersion))

		// Deleting a key takes its Secret's access at once (403, not 404).
		Expect(alice.Delete(ctx, second)).To(Succeed())
		Eventually(func() bool { return apierrors.IsForbidden(readSecretAs(alice, second)) }, timeout, interval).Should(BeTrue())
		Expect(readSecretAs(alice, key)).To(Succeed())

		// With her last key gone, her Role and RoleBinding go too.
		Expect(alice.Delete(ctx, key)).To(Succeed())
		Eventually(func() bool { return apierrors.IsForbidden(readSecretAs(alice, key)) }, timeout, interval).Should(BeTrue())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(role), &rbacv1.Role{}))
		}, timeout, interval).Should(BeTrue())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(role), &rbacv1.RoleBinding{}))
		}, timeout, interval).Should(BeTrue())
		Expect(readSecretAs(bob, bobs)).To(Succeed(), "bob keeps his")
	})

	It("grants nothing for a key whose secretTemplate names a stranger's Secret", func() {
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db-password"}, StringData: map[string]string{"p": "x"}}
		Expect(k8s.Create(ctx, other)).To(Succeed())
		key := unowned(ns, "grab", "payments")
		key.Spec.SecretTemplate = &keyward.SecretTemplate{Name: "db-password"}
		Expect(alice.Create(ctx, key)).To(Succeed())
		eventuallyPhase(key, keyward.PhasePending, keyward.ReasonSecretNameConflict)
		mine := unowned(ns, "mine", "payments")
		Expect(alice.Create(ctx, mine)).To(Succeed())
		eventuallyPhase(mine, keyward.PhaseActive)
		Eventually(func() error { return readSecretAs(alice, mine) }, timeout, interval).Should(Succeed())
		Expect(apierrors.IsForbidden(alice.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{}))).To(BeTrue())
		Expect(get(&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: policy.OwnerAccessName("alice")}}).Rules[0].ResourceNames).
			To(Equal([]string{"mine"}))
	})

	It("binds a ServiceAccount owner as a ServiceAccount", func() {
		sa := "system:serviceaccount:" + ns + ":deployer"
		deployer := userWithRole(ns, sa, "keyward-developer")
		key := unowned(ns, "ci-key", "payments")
		Expect(deployer.Create(ctx, key)).To(Succeed())
		Expect(get(key).Spec.Owner).To(Equal(sa))
		eventuallyPhase(key, keyward.PhaseActive)
		Eventually(func() error { return readSecretAs(deployer, key) }, timeout, interval).Should(Succeed())
		b := get(&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: policy.OwnerAccessName(sa)}})
		Expect(b.Subjects).To(Equal([]rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "deployer"}}))
	})

	It("is within what the manager's own ClusterRole may grant (RBAC's escalation check)", func() {
		// The suite's manager runs as an admin; the shipped one holds only
		// the ClusterRole keyward-manager (config/manager binds it).
		manager := userWithRole(ns, "manager-stand-in", "keyward-manager")
		g := policy.OwnerGrant{Owner: "erin", Name: policy.OwnerAccessName("erin"), Subject: policy.OwnerSubject("erin"), SecretNames: []string{"erins-key"}}
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: g.Name, Labels: map[string]string{"test": "escalation"}}, Rules: g.Rules()}
		Eventually(func() error { return manager.Create(ctx, role) }, timeout, interval).Should(Succeed())
		Expect(manager.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: g.Name},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: g.Name}, Subjects: []rbacv1.Subject{g.Subject}})).To(Succeed())
		// And no more: it could not grant what it does not hold.
		wider := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wider"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}
		Expect(apierrors.IsForbidden(manager.Create(ctx, wider))).To(BeTrue())
	})
})
