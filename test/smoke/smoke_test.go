package smoke

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	keywardv1alpha1 "keyward.dev/keyward/api/v1alpha1"
)

// The garbage collector removes a dependent 0.2–0.3 s after its owner goes;
// 10 s leaves room for a loaded 2-core machine while still catching a missing
// GC (which would otherwise never delete it).
const cascadeTimeout = 10 * time.Second

func newNamespace() string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "smoke-"}}
	Expect(env.Client.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func ownerRef(owner client.Object) metav1.OwnerReference {
	gvk, err := apiutil.GVKForObject(owner, env.Scheme)
	Expect(err).NotTo(HaveOccurred())
	return metav1.OwnerReference{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: owner.GetName(), UID: owner.GetUID()}
}

func gone(obj client.Object) func() bool {
	return func() bool {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err)
	}
}

var _ = Describe("the harness's control plane", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("serves Keyward's three CRDs from config/crd", func() {
		crds := &unstructured.UnstructuredList{}
		crds.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"})
		Expect(env.Client.List(ctx, crds)).To(Succeed())
		var names []string
		for _, crd := range crds.Items {
			names = append(names, crd.GetName())
		}
		Expect(names).To(ContainElements("applications.keyward.dev", "accesskeys.keyward.dev", "tenantsettings.keyward.dev"))

		app := &keywardv1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: "inventory-sync", Namespace: ns},
			Spec:       keywardv1alpha1.ApplicationSpec{DisplayName: "Inventory sync"},
		}
		Expect(env.Client.Create(ctx, app)).To(Succeed())

		got := &keywardv1alpha1.Application{}
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(app), got)).To(Succeed())
		Expect(got.Spec.DisplayName).To(Equal("Inventory sync"))
		// Defaults from the CRD's schema prove it is the generated CRD that is served.
		Expect(got.Spec.Group).To(Equal(keywardv1alpha1.DefaultGroup))
		Expect(got.Spec.MaxAccessKeys).To(BeEquivalentTo(2))
	})

	It("rejects an object its CRD schema forbids", func() {
		app := &keywardv1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: "too-many", Namespace: ns},
			Spec:       keywardv1alpha1.ApplicationSpec{MaxAccessKeys: 1001},
		}
		err := env.Client.Create(ctx, app)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "expected Invalid, got %v", err)
	})

	It("garbage-collects a ConfigMap whose owner ConfigMap is deleted", func() {
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns}}
		Expect(env.Client.Create(ctx, owner)).To(Succeed())
		dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: "dependent", Namespace: ns, OwnerReferences: []metav1.OwnerReference{ownerRef(owner)},
		}}
		Expect(env.Client.Create(ctx, dependent)).To(Succeed())
		bystander := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "bystander", Namespace: ns}}
		Expect(env.Client.Create(ctx, bystander)).To(Succeed())

		Expect(env.Client.Delete(ctx, owner)).To(Succeed())

		Eventually(gone(dependent)).WithTimeout(cascadeTimeout).WithPolling(50 * time.Millisecond).Should(BeTrue())
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(bystander), bystander)).To(Succeed())
	})

	It("orphans the dependent when the owner is deleted with propagationPolicy Orphan", func() {
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner", Namespace: ns}}
		Expect(env.Client.Create(ctx, owner)).To(Succeed())
		dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: "dependent", Namespace: ns, OwnerReferences: []metav1.OwnerReference{ownerRef(owner)},
		}}
		Expect(env.Client.Create(ctx, dependent)).To(Succeed())

		Expect(env.Client.Delete(ctx, owner, client.PropagationPolicy(metav1.DeletePropagationOrphan))).To(Succeed())

		// The garbage collector removes the orphan finalizer after stripping
		// the owner reference; then the owner is really gone.
		Eventually(gone(owner)).WithTimeout(cascadeTimeout).WithPolling(50 * time.Millisecond).Should(BeTrue())
		Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(dependent), dependent)).To(Succeed())
		Expect(dependent.OwnerReferences).To(BeEmpty())
	})

	It("cascades Application → AccessKey → Secret through Keyward's CRDs", func() {
		app := &keywardv1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns}}
		Expect(env.Client.Create(ctx, app)).To(Succeed())
		key := &keywardv1alpha1.AccessKey{
			ObjectMeta: metav1.ObjectMeta{Name: "billing-main", Namespace: ns, OwnerReferences: []metav1.OwnerReference{ownerRef(app)}},
			Spec:       keywardv1alpha1.AccessKeySpec{Application: app.Name},
		}
		Expect(env.Client.Create(ctx, key)).To(Succeed())
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "billing-main", Namespace: ns, OwnerReferences: []metav1.OwnerReference{ownerRef(key)}},
			StringData: map[string]string{"accessKey": "not-a-real-key"},
		}
		Expect(env.Client.Create(ctx, secret)).To(Succeed())

		Expect(env.Client.Delete(ctx, app)).To(Succeed())

		Eventually(gone(key)).WithTimeout(cascadeTimeout).WithPolling(50 * time.Millisecond).Should(BeTrue())
		Eventually(gone(secret)).WithTimeout(cascadeTimeout).WithPolling(50 * time.Millisecond).Should(BeTrue())
	})

	It("deletes a namespace and its contents (namespace controller)", func() {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "content", Namespace: ns}}
		Expect(env.Client.Create(ctx, cm)).To(Succeed())
		app := &keywardv1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "content", Namespace: ns}}
		Expect(env.Client.Create(ctx, app)).To(Succeed())

		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		Expect(env.Client.Delete(ctx, namespace)).To(Succeed())

		Eventually(gone(namespace)).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(BeTrue())
		Expect(gone(app)()).To(BeTrue())
	})

	It("impersonates users for RBAC tests: a user without bindings is forbidden", func() {
		alice, err := env.ClientAs("alice", "tenant-a")
		Expect(err).NotTo(HaveOccurred())
		err = alice.List(ctx, &keywardv1alpha1.ApplicationList{}, client.InNamespace(ns))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "expected Forbidden, got %v", err)
		Expect(err.Error()).To(ContainSubstring(`User "alice"`))

		// The admin client still can.
		Expect(env.Client.List(ctx, &keywardv1alpha1.ApplicationList{}, client.InNamespace(ns))).To(Succeed())
	})
})
