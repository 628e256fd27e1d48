package controllers_test

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	keyward "keyward.dev/keyward/api/v1alpha1"
)

var _ = Describe("Scope names", Serial, func() {
	// ':' separates a scope from its access and ',' (or a space) scopes
	// from each other in headers and token claims: a scope named
	// "orders:ReadWrite x" with ReadOnly access would read as
	// orders:ReadWrite to a JWT gateway.
	bad := []string{"orders:ReadWrite x", "a,b", "a:b", "a b", `a"b`}

	It("are refused by the API server unless they are OAuth 2.0 scope tokens without ':' and ','", func() {
		ns := newTenant()
		for i, name := range bad {
			app := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("app-%d", i)},
				Spec: keyward.ApplicationSpec{Scopes: []keyward.Scope{{Name: name, Access: keyward.ReadOnly}}}}
			err := k8s.Create(ctx, app)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "Application scope %q: %v", name, err)
			Expect(err.Error()).To(ContainSubstring("spec.scopes[0].name"))

			key := buildKey(ns, fmt.Sprintf("key-%d", i), "app", keyScopes(keyward.Scope{Name: name, Access: keyward.ReadOnly}))
			err = k8s.Create(ctx, key)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "AccessKey scope %q: %v", name, err)
		}
		newApp(ns, "ok", withScopes(keyward.Scope{Name: "reports/2026.q4_x-y~!", Access: keyward.ReadOnly}))
	})

	It("stored before the CRD refused them keep their objects working, are marked, and the rest of the object is served", func() {
		ns := newTenant()
		restore := editCRDSchema("applications", func(schema map[string]any) {
			name := schema["properties"].(map[string]any)["spec"].(map[string]any)["properties"].(map[string]any)["scopes"].(map[string]any)["items"].(map[string]any)["properties"].(map[string]any)["name"].(map[string]any)
			delete(name, "pattern")
		})
		legacy := &keyward.Application{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "legacy"},
			Spec: keyward.ApplicationSpec{Scopes: []keyward.Scope{{Name: "reports", Access: keyward.ReadOnly}, {Name: bad[0], Access: keyward.ReadOnly}}}}
		Eventually(func() error { return k8s.Create(ctx, legacy) }, timeout, interval).Should(Succeed(), "the older CRD takes the name")
		restore()

		// A status write after the CRD is restored passes (the API server
		// ratchets an unchanged field): the key is counted and the
		// Application marked.
		eventuallyPhase(newKey(ns, "k", "legacy"), keyward.PhaseActive, keyward.ReasonIssued)
		Eventually(func(g Gomega) {
			app := get(legacy.DeepCopy())
			g.Expect(app.Status.Keys).NotTo(BeNil())
			g.Expect(app.Status.Keys.Active).To(BeEquivalentTo(1))
			c := meta.FindStatusCondition(app.Status.Conditions, keyward.ConditionScopeNames)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(keyward.ReasonInvalidScopeName))
			g.Expect(c.Message).To(ContainSubstring(`"orders:ReadWrite x"`))
		}, timeout, interval).Should(Succeed())

		By("renamed: the mark goes")
		update(legacy.DeepCopy(), func(a *keyward.Application) {
			a.Spec.Scopes = []keyward.Scope{{Name: "reports", Access: keyward.ReadOnly}, {Name: "orders", Access: keyward.ReadOnly}}
		})
		Eventually(func() *metav1.Condition {
			return meta.FindStatusCondition(get(legacy.DeepCopy()).Status.Conditions, keyward.ConditionScopeNames)
		}, timeout, interval).Should(BeNil())
	})
})
